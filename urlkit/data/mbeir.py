"""M-BEIR as UniIR publishes it (Wei et al., 2024): a root folder, a dataset name, a split.

    <root>/query/train/mbeir_<name>_train.jsonl                     training queries, per
                                                                    dataset (all its tasks)
    <root>/query/{val,test}/mbeir_<name>_task<k>_<split>.jsonl      queries of one split
    <root>/query/union_train/mbeir_union_up_train.jsonl             the union files
    <root>/query/union_val/mbeir_union_val.jsonl
    <root>/cand_pool/local/mbeir_<dataset>[_<split>]_cand_pool.jsonl the local pool of val and
                                                                    test (per task or split)
    <root>/cand_pool/global/mbeir_union_<split>_cand_pool.jsonl     the union's pools; train's
                                                                    is every training split's
    <root>/qrels/<split>/mbeir_<dataset>_<split>_qrels.txt          "qid 0 did grade task_id"
    <root>/instructions/query_instructions.tsv                      prompts per task
    <root>/mbeir_images/...                                         image paths are relative
                                                                    to <root>

``data.path=<root> data.dataset=cirr_task7`` reads ``query/<split>/`` for each split the
run asks for (urlkit's ``dev`` is M-BEIR's ``val``); a split file that is not there is a
:class:`MissingSplitError` naming every path looked for, never another split's file. M-BEIR
ships its training queries per dataset (``mbeir_mscoco_train.jsonl`` holds tasks 0 and 3), so
the train split of ``<name>_task<k>`` is ``mbeir_<name>_task<k>_train.jsonl`` when there is
one, else the lines of ``mbeir_<name>_train.jsonl`` whose ``task_id`` is k.

Pools: val and test read the task's local pool, as UniIR evaluates; training reads the
union's training pool, ``cand_pool/global/mbeir_union_train_cand_pool.jsonl``, as UniIR trains,
keeping the candidates of the datasets the query file names (the part of each id before ":").
Only a tree without it (nor a pool named after the training file) trains on the task's local
pool, and says so in the split's report: those are the evaluation candidates, so random
training negatives can be test candidates (never one that val or test judges:
:func:`judged_ids`, ``Split.held_out``). ``pool=`` (``data.pool.<split>=``) gives
any split another pool, e.g. the union's test pool for UniIR's global setting. A positive or
negative of *another* dataset that is not in the pool is left out (OVEN's queries list InfoSeek
positives its local pool does not hold; UniIR evaluates without them), and counted in the
split's report; one of the query's own dataset that is missing is an error.

Query lines: ``{"qid": "7:1", "query_txt": ..., "query_img_path": ..., "query_modality":
"image,text", "pos_cand_list": [...], "neg_cand_list": [...], "task_id": 7}``; pool lines:
``{"did": "7:9", "txt": ..., "img_path": ..., "modality": "image"}``. ``neg_cand_list``
becomes ``Query.negatives``; the qrels file, when present, gives the judgements (graded),
else ``pos_cand_list`` does. The category of the split follows ``task_id`` (UniIR's task
numbering, see :data:`TASK_CATEGORIES`).

Instructions: ``query_instructions.tsv`` has a header line and rows ``query_modality
cand_modality dataset_name dataset_id prompt_1 prompt_2 ...``; a query's prompts are those of
(its dataset id = the part of its qid before ":", its ``query_modality``, the ``modality`` of
its first positive), as UniIR keys them. Each query's ``instruction`` is one of them, chosen by
(``instruction_seed``, qid): the prompt of every evaluation, the same in every run with that
seed; training draws one of ``instruction_choices`` per (seed, epoch, qid), as UniIR draws one
per example. A query whose key the file does not list is an error naming the file and the key.

Repeated query ids in a training file are kept as repeats (``mbeir_union_up_train.jsonl`` is
upsampled with repeats); in val and test they are an error.

A single query *file* given as ``data.path`` is read for the split its name says
(``mbeir_x_task0_test.jsonl`` is the test split); asked for another split, the file's own
M-BEIR tree is read for that split, and a file outside a tree is an error (the same queries
would otherwise serve for training and for testing).

One file over 400 lines because it is one contract with UniIR's tree: its layout, the rules
that pair a split with its pool, qrels and instructions, and their readers; a quarter of it is
this description.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

from urlkit.data.format import DataError, Document, MissingSplitError, Query, Split
from urlkit.data.negatives import query_rng
from urlkit.data.picture_checks import PictureField
from urlkit.data.reading import (
    ErrorPolicy,
    LineFields,
    SkippedDocuments,
    check_document,
    check_query,
    iter_jsonl,
    iter_lines,
    parses_as,
    read_records,
)

# UniIR's task ids (src/data/preprocessing/utils.py) -> the paper's Table 4 categories.
# Task 5 (image -> image,text) is not used by M-BEIR.
TASK_CATEGORIES = {0: "T2I", 1: "T2T", 2: "T2IT", 3: "I2T", 4: "I2I", 6: "IT2T", 7: "IT2I", 8: "IT2IT"}
# urlkit's split name -> M-BEIR's folder and file suffix
SPLIT_FOLDERS = {"train": "train", "val": "val", "dev": "val", "test": "test"}
SPLIT_NAMES = ("train", "val", "dev", "test", "union_train", "union_val")
INSTRUCTIONS_FILE = Path("instructions") / "query_instructions.tsv"


def is_mbeir_root(path: Path) -> bool:
    """A folder laid out as M-BEIR: ``query/`` next to ``cand_pool/``."""
    return path.is_dir() and (path / "query").is_dir() and (path / "cand_pool").is_dir()


def load_mbeir_root(
    root: Path,
    dataset: str,
    split: str,
    policy: ErrorPolicy,
    *,
    pool: str | Path | None = None,
    instructions: bool = True,
    instruction_seed: int = 0,
) -> Split:
    """One split of ``dataset`` (``cirr_task7``, ``union_up``, ...) of the M-BEIR tree at ``root``."""
    root = root.resolve()
    if not dataset:
        raise DataError(
            "an M-BEIR root needs the dataset: data.dataset=<name>_task<k> (available: "
            f"{', '.join(available_datasets(root)) or 'none found under query/'})",
            path=root,
        )
    query_file, task = find_query_file(root, dataset, split)
    return load_mbeir(
        query_file, split, policy, pool=pool, image_root=root, task=task, name=dataset,
        instructions=instructions, instruction_seed=instruction_seed,
    )  # fmt: skip


def available_datasets(root: Path) -> list[str]:
    """Dataset names that have a query file under ``root/query/*/`` (for error messages)."""
    names = set()
    for path in (root / "query").glob("*/mbeir_*.jsonl*"):
        name = _dataset_name(path)
        if path.parent.name != "train" or split_task(name)[1] is not None:  # not a per-dataset train file
            names.add(name)
    return sorted(names)


def find_query_file(root: Path, dataset: str, split: str) -> tuple[Path, int | None]:
    """The query file of ``dataset``'s ``split`` and the task its lines are filtered to (None:
    all): ``query/<split>/mbeir_<dataset>_<split>.jsonl[.gz]``; for the train split of
    ``<name>_task<k>`` also the dataset's ``query/train/mbeir_<name>_train.jsonl``, task k;
    for ``union*`` datasets ``query/union_<split>/`` (``mbeir_union_val.jsonl`` included)."""
    folder = SPLIT_FOLDERS.get(split)
    if folder is None:
        raise DataError(f"M-BEIR has no split {split!r}: use one of train, val (dev), test", path=root)
    tried: list[tuple[Path, int | None]] = [(root / "query" / folder / f"mbeir_{dataset}_{folder}.jsonl", None)]
    name, task = split_task(dataset)
    if task is not None and folder == "train":
        tried.append((root / "query" / folder / f"mbeir_{name}_{folder}.jsonl", task))
    if dataset.startswith("union"):
        union = root / "query" / f"union_{folder}"
        tried += [(union / f"mbeir_{dataset}_{folder}.jsonl", None), (union / f"mbeir_union_{folder}.jsonl", None)]
    for path, task_filter in tried:
        for candidate in (path, path.with_name(path.name + ".gz")):
            if candidate.is_file():
                return candidate, task_filter
    hint = ""
    if dataset.startswith("union") and folder == "test":
        hint = ("; M-BEIR has no union test queries: UniIR tests each dataset's own test split "
                "(data.dataset=<name>_task<k>, or benchmark=<suite> for several)")  # fmt: skip
    raise MissingSplitError(
        f"no {folder} split of M-BEIR dataset {dataset!r}: looked for "
        f"{' and '.join(str(p) for p, _ in dict.fromkeys(tried))} (.gz allowed){hint}",
        path=tried[0][0],
    )


def split_task(dataset: str) -> tuple[str, int | None]:
    """``cirr_task7`` -> ``("cirr", 7)``; a name without a task -> ``(name, None)``."""
    match = re.fullmatch(r"(.+)_task(\d+)", dataset)
    return (match.group(1), int(match.group(2))) if match else (dataset, None)


def load_mbeir(
    query_path: Path,
    split: str,
    policy: ErrorPolicy,
    *,
    pool: str | Path | None = None,
    image_root: str | Path | None = None,
    task: int | None = None,
    name: str | None = None,
    instructions: bool = True,
    instruction_seed: int = 0,
) -> Split:
    """One M-BEIR query file with its pool, qrels and instructions (see the module docstring);
    ``task``: only the lines of that ``task_id``; ``name``: the split's dataset name (default:
    from the file name)."""
    query_path = Path(query_path).resolve()
    own_split = file_split(query_path)
    if own_split is None or SPLIT_FOLDERS.get(own_split, own_split) != SPLIT_FOLDERS.get(split, split):
        return _other_split(query_path, own_split, split, policy, pool, instructions, instruction_seed)
    training = SPLIT_FOLDERS.get(split) == "train"
    root = Path(image_root).resolve() if image_root is not None else find_mbeir_root(query_path)
    pool_path = Path(pool).resolve() if pool is not None else find_pool(query_path, root, split, name)
    if not pool_path.is_file():
        raise DataError("M-BEIR candidate pool file not found", path=pool_path)
    # training on one dataset from the union's pool: only the candidates of the datasets its
    # queries name (random negatives from its own kind; memory); evaluation reads a pool whole
    union_pool = pool_path.parent.name == "global"
    keep = _dataset_ids(query_path, task) if training and union_pool and not _is_union(query_path) else None
    qrels_path = find_qrels(query_path, root)
    judged = read_qrels(qrels_path, policy) if qrels_path else {}
    prompts = read_instructions(root / INSTRUCTIONS_FILE) if instructions else None

    modalities: dict[str, str] = {}  # did -> the pool's "modality" (the instruction key's third part)

    def document(fields):
        doc_id = fields.id("did")
        if keep is not None and doc_id.partition(":")[0] not in keep:
            return None
        doc = Document(id=doc_id, text=fields.text("txt"), image=fields.image("img_path", root))
        modalities[doc.id] = fields.text("modality") or _modality_name(doc.text, doc.image)
        return check_document(doc, fields)

    tasks: Counter[int] = Counter()
    left_out: Counter[str] = Counter()
    order: list[str] = []  # query ids in file order, a training file's repeats included
    accepted: set[str] = set()

    def foreign(ids, dataset_id):
        """The ids of another dataset that the pool does not hold (left out, counted)."""
        dropped = [d for d in ids if d not in corpus and d.partition(":")[0] != dataset_id]
        left_out["ids of other datasets' candidates not in the pool left out"] += len(dropped)
        return set(dropped)

    def query(fields):
        line_task = fields.record.get("task_id")
        if task is not None and line_task != task:
            left_out[f"lines of other tasks than task {task} left out"] += 1
            return None
        qid = fields.id("qid")
        if qid in accepted:
            if not training:
                raise fields.error(f"duplicate query id {qid!r}", "duplicate id")
            order.append(qid)  # an upsampled copy: trained on once more
            left_out["repeated training queries kept as repeats"] += 1
            return None
        dataset_id = qid.partition(":")[0]
        positives = fields.id_list("pos_cand_list", required=True) or []
        negatives = fields.id_list("neg_cand_list") or []
        qrels = judged.get(qid) or dict.fromkeys(positives, 1)
        dropped = foreign([*qrels, *negatives], dataset_id)
        item = Query(
            id=qid,
            text=fields.text("query_txt"),
            image=fields.image("query_img_path", root),
            qrels={d: grade for d, grade in qrels.items() if d not in dropped},
            negatives=[d for d in negatives if d not in dropped],
        )
        check_query(item, corpus, fields, skipped)
        if prompts is not None:
            query_modality = fields.text("query_modality") or _modality_name(item.text, item.image)
            key = (dataset_id, query_modality, modalities[item.positives[0]])
            choices = prompts.get(key)
            if not choices:
                raise fields.error(
                    f"query {qid!r}: {root / INSTRUCTIONS_FILE} has no prompt for (dataset id, "
                    f"query modality, candidate modality) = {key}", "no instruction",
                )  # fmt: skip
            item.instruction = choices[int(query_rng(instruction_seed, 0, qid).integers(len(choices)))]
            item.instruction_choices = tuple(choices)
        if isinstance(line_task, int) and not isinstance(line_task, bool):
            tasks[line_task] += 1
        order.append(qid)
        accepted.add(qid)
        return item

    skipped = SkippedDocuments()
    # the pictures checked ahead: those of the candidates and queries kept, as document and query do
    kept_candidate = None if keep is None else (lambda record: str(record.get("did")).partition(":")[0] in keep)
    corpus = read_records(pool_path, policy, document, "candidate", skipped, id_key="did",
                          picture=PictureField("img_path", root, kept_candidate))
    of_task = None if task is None else (lambda record, task=task: record.get("task_id") == task)
    queries = read_records(query_path, policy, query, "query", picture=PictureField("query_img_path", root, of_task))
    task = task if task is not None else (tasks.most_common(1)[0][0] if tasks else None)
    notes = [f"{n} {what}" for what, n in left_out.items() if n] + skipped.notes()
    only = f" (dataset ids {', '.join(sorted(keep))} only)" if keep is not None else ""
    notes.append(f"candidates from {pool_path}{only}")
    stem = _stem(query_path)
    if training and pool is None and not union_pool and not pool_path.name.startswith(f"{stem}_"):
        notes.append("warning: val and test read this pool too, so random training negatives can be their "
                     "candidates; data.pool.train=<cand_pool/global/mbeir_union_train_cand_pool.jsonl> trains without")
    return Split(
        name=name or _dataset_name(query_path),
        split=split,
        category=TASK_CATEGORIES.get(task, "") if task is not None else "",
        instruction="",
        corpus=corpus,
        queries=[queries[qid] for qid in order],
        source=str(query_path),
        notes=notes,
    )


def _other_split(query_path, own_split, split, policy, pool, instructions, instruction_seed) -> Split:
    """A query file asked for a split it does not hold: read that split from its M-BEIR tree."""
    root = find_mbeir_root(query_path)
    holds = f"holds the {own_split!r} split" if own_split else "does not say its split in its name"
    if not is_mbeir_root(root):
        raise DataError(
            f"this M-BEIR query file {holds}, not {split!r}, and is not inside an M-BEIR tree "
            "(query/ and cand_pool/): give the M-BEIR root as data.path with "
            "data.dataset=<name>_task<k>, or one query file per split",
            path=query_path,
        )
    return load_mbeir_root(
        root, _dataset_name(query_path), split, policy, pool=pool,
        instructions=instructions, instruction_seed=instruction_seed,
    )  # fmt: skip


def file_split(query_path: Path) -> str | None:
    """The split a query file holds, from its name (``mbeir_x_task0_test.jsonl`` -> test)."""
    stem = _stem(query_path)
    tail = stem.rpartition("_")[2]
    return tail if tail in SPLIT_NAMES else None


def find_mbeir_root(query_path: Path) -> Path:
    """The nearest folder above the query file that holds ``cand_pool/`` or ``mbeir_images/``;
    the query file's own folder when there is none (a small dataset in M-BEIR's format)."""
    for folder in query_path.parents:
        if (folder / "cand_pool").is_dir() or (folder / "mbeir_images").is_dir():
            return folder
    return query_path.parent


def find_pool(query_path: Path, root: Path, split: str | None = None, dataset: str | None = None) -> Path:
    """The pool M-BEIR pairs with a query file read for ``split`` (default: its own).

    Val and test read the local pool: ``mbeir_mscoco_task0_test.jsonl`` ->
    ``mbeir_mscoco_task0_test_cand_pool.jsonl`` and ``mbeir_cirr_task7_test.jsonl`` ->
    ``mbeir_cirr_task7_cand_pool.jsonl`` (M-BEIR names some pools per split, some per task),
    looked up in ``cand_pool/local/``, ``cand_pool/`` and next to the query file; the union files
    use ``cand_pool/global/mbeir_union_<split>_cand_pool.jsonl``. Training reads a pool named
    after its own file (``<stem>_cand_pool.jsonl``) or the union's training pool, never a local
    evaluation pool when one of those is there (a tree without them trains on the task's pool,
    and the split's report warns). A plain ``cand_pool.jsonl`` next to the query file serves
    every split (a small dataset in M-BEIR's format, one pool by its maker's choice).
    """
    stem = _stem(query_path)
    split = split or file_split(query_path) or ""
    split = SPLIT_FOLDERS.get(split, split)
    folders = [root / "cand_pool" / "local", root / "cand_pool", query_path.parent]
    head, _, tail = stem.rpartition("_")
    tried = [folder / f"{stem}_cand_pool.jsonl" for folder in folders]
    if split == "train" or (_is_union(query_path) and tail in SPLIT_NAMES):
        tried.append(root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl")
    # the task's pool (val and test's; training's last resort), named after the file or, for a
    # training file of several tasks, after the dataset asked for
    heads = dict.fromkeys([head] * bool(tail in SPLIT_NAMES and head) + [f"mbeir_{dataset}"] * bool(dataset))
    tried += [folder / f"{name}_cand_pool.jsonl" for name in heads for folder in folders]
    tried.append(query_path.parent / "cand_pool.jsonl")
    for candidate in tried:
        for path in (candidate, candidate.with_name(candidate.name + ".gz")):
            if path.is_file():
                return path
    raise DataError(
        f"no M-BEIR candidate pool found for the {split} split of this query file; give one with "
        f"data.pool.{split}=<file>. Looked for: {', '.join(str(p) for p in tried)}",
        path=query_path,
        reason="missing pool",
    )


def find_qrels(query_path: Path, root: Path) -> Path | None:
    """``qrels/<split>/<query file stem>_qrels.txt`` when M-BEIR ships one (else None)."""
    stem = _stem(query_path)
    split = file_split(query_path)
    folder = query_path.parent.name if split is None else split
    path = root / "qrels" / folder / f"{stem}_qrels.txt"
    return path if path.is_file() else None


def read_qrels(path: Path, policy: ErrorPolicy | None = None) -> dict[str, dict[str, int]]:
    """M-BEIR's qrels: ``qid 0 did grade [task_id]`` per line, whitespace-separated.

    As the BEIR reader: a malformed line, or a second judgement of a (qid, did) pair, is a
    :class:`DataError` naming the file, the line (and the first judgement's) for ``policy``
    (default raise; skip keeps the first and counts the line). UniIR's ``load_qrel`` appends a
    repeat to the qid's list, and a later grade here replaced the first without a word."""
    policy = policy or ErrorPolicy("raise")
    qrels: dict[str, dict[str, int]] = {}
    first: dict[tuple[str, str], int] = {}
    # the data files' line reader: a BOM is no part of the first qid (whose graded judgements
    # gave way to pos_cand_list), a byte that is not UTF-8 is an error naming its line
    for number, line in iter_lines(path, policy):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (4, 5) or not parses_as(int, parts[3]):
            policy.handle(DataError(
                f"expected 'qid 0 did grade [task_id]', got {line.strip()!r}",
                path=path, line=number, reason="malformed qrels line",
            ))  # fmt: skip
            continue
        pair = (parts[0], parts[2])
        if pair in first:
            policy.handle(DataError(f"second judgement of ({pair[0]!r}, {pair[1]!r}), first on line "
                                    f"{first[pair]}", path=path, line=number, reason="duplicate judgement"))
            continue
        first[pair] = number
        qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return qrels


def judged_ids(path: Path, dataset: str | None, split: str, policy: ErrorPolicy) -> set[str]:
    """The candidate ids the queries of ``split`` judge (its qrels file and ``pos_cand_list``),
    read without the pool (a training split's held-out documents,
    ``urlkit.data.loaders.judged_documents``). ``path``: the M-BEIR root (with ``dataset``) or
    a query file, whose tree holds the other splits; a file outside a tree holds only its own."""
    path = path.resolve()
    task = None
    if path.is_dir():
        root = path
        query_file, task = find_query_file(root, dataset or "", split)
    else:
        root, own = find_mbeir_root(path), file_split(path)
        query_file = path
        if own is None or SPLIT_FOLDERS.get(own, own) != SPLIT_FOLDERS.get(split, split):
            if not is_mbeir_root(root):
                raise MissingSplitError(f"no {split} split: this query file is not inside an M-BEIR tree", path=path)
            query_file, task = find_query_file(root, _dataset_name(path), split)
    qrels_path = find_qrels(query_file, root)
    judged = {did for grades in (read_qrels(qrels_path, policy) if qrels_path else {}).values() for did in grades}
    for line_no, record in iter_jsonl(query_file, policy):
        if task is None or record.get("task_id") == task:
            try:
                judged.update(LineFields(record, query_file, line_no).id_list("pos_cand_list") or [])
            except DataError as err:
                policy.handle(err)
    return judged


def read_instructions(path: Path) -> dict[tuple[str, str, str], list[str]]:
    """``{(dataset id, query modality, candidate modality): [prompt, ...]}`` from the TSV."""
    if not path.is_file():
        raise DataError(
            "M-BEIR instruction file not found (every query's instruction comes from it; "
            "data.instructions=false trains without instructions)",
            path=path,
            reason="missing instructions",
        )
    prompts: dict[tuple[str, str, str], list[str]] = {}
    # the data files' line reader: a BOM dropped, a byte that is not UTF-8 an error naming its line
    rows = csv.reader((line for _, line in iter_lines(path, ErrorPolicy("raise"))),
                      delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [cell.strip() for cell in next(rows, [])]
    # UniIR reads the columns by position (query_modality, cand_modality, dataset name,
    # dataset_id, prompt_1, ...); a header that names them is read by name instead, so a
    # reordered or extended file cannot turn a note into a prompt
    named = {"query_modality", "cand_modality", "dataset_id"} <= set(header)
    if named:
        where = [header.index(name) for name in ("dataset_id", "query_modality", "cand_modality")]
        prompt_columns = [i for i, name in enumerate(header) if name.startswith("prompt")]
    else:
        where, prompt_columns = [3, 0, 1], None
    for number, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(where) or (not named and len(row) < 5):
            raise DataError(
                "expected query_modality, cand_modality, dataset_name, dataset_id and at "
                f"least one prompt, got {len(row)} columns", path=path, line=number,
                reason="malformed instruction line",
            )  # fmt: skip
        key = tuple(row[i].strip() for i in where)
        cells = row[4:] if prompt_columns is None else [row[i] for i in prompt_columns if i < len(row)]
        prompts[key] = [cell.strip() for cell in cells if cell.strip()]
    return prompts


def _stem(query_path: Path) -> str:
    """``mbeir_cirr_task7_test.jsonl[.gz]`` -> ``mbeir_cirr_task7_test``."""
    return query_path.name.removesuffix(".gz").removesuffix(".jsonl")


def _is_union(query_path: Path) -> bool:
    return query_path.name.startswith("mbeir_union")


def _dataset_ids(query_path: Path, task: int | None) -> set[str]:
    """The dataset ids (the part before ":") of every query and candidate id the lines of
    ``task`` (None: all) name; lines that are not JSON objects are left to the real read."""
    ids: set[str] = set()
    for _, record in iter_jsonl(query_path, ErrorPolicy("skip")):  # the bad lines: the real read's
        if task is not None and record.get("task_id") != task:
            continue
        for key in ("pos_cand_list", "neg_cand_list"):
            if isinstance(record.get(key), list):
                ids.update(str(d).partition(":")[0] for d in record[key])
        if record.get("qid") is not None:
            ids.add(str(record["qid"]).partition(":")[0])
    return ids


def _modality_name(text: str, image: str | None) -> str:
    """M-BEIR's modality words for a line that does not state its own."""
    return ",".join(name for name, present in (("image", image), ("text", text.strip())) if present)



def _dataset_name(query_path: Path) -> str:
    """``mbeir_cirr_task7_test.jsonl`` -> ``cirr_task7``."""
    stem = _stem(query_path).removeprefix("mbeir_")
    head, _, tail = stem.rpartition("_")
    return head if tail in SPLIT_NAMES and head else stem
