"""``load_split``: one entry point for urlkit JSONL folders, BEIR folders and M-BEIR files.

The format is detected from what is on disk, so ``data.path=...`` alone is enough:

* a folder with ``<split>.jsonl[.gz]`` next to ``corpus.jsonl[.gz]``  -> urlkit JSONL
* a folder with ``qrels/<split>.tsv`` and ``corpus.jsonl``             -> BEIR
* a folder with ``query/`` and ``cand_pool/`` (with ``dataset=``)      -> M-BEIR root
* a ``.jsonl`` file whose lines carry ``qid`` / ``pos_cand_list``       -> M-BEIR query file

The urlkit JSONL format is documented in docs/architecture.md ("urlkit JSONL format").
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

from urlkit.data.format import DataError, Document, MissingSplitError, Query, Split, infer_category
from urlkit.data.picture_checks import PictureField, PictureShare
from urlkit.data.reading import (
    ErrorPolicy,
    LineFields,
    SkippedDocuments,
    check_document,
    check_query,
    find_data_file,
    iter_jsonl,
    iter_lines,
    read_dataset_info,
    read_records,
)

FORMATS = ("auto", "jsonl", "beir", "mbeir")


def load_split(
    path: str | Path,
    split: str,
    *,
    format: str = "auto",
    on_error: str = "raise",
    check_pictures: str = "verify",
    instruction: str | None = None,
    category: str | None = None,
    pool: str | Path | None = None,
    image_root: str | Path | None = None,
    dataset: str | None = None,
    instructions: bool = True,
    instruction_seed: int = 0,
    held_out_splits: Sequence[str] = (),
    picture_share: PictureShare | None = None,
) -> Split:
    """Load one split of a dataset into a :class:`Split`.

    ``on_error="raise"`` stops at the first bad line with a :class:`DataError` naming file
    and line; ``"skip"`` drops bad lines and counts them by reason in ``Split.skipped``.
    ``check_pictures``: ``"verify"`` opens every picture a line names (PIL's ``verify()``),
    ``"exists"`` only looks for the file (:mod:`urlkit.data.picture_checks`). ``picture_share``
    (a rank of a DDP run, with ``on_error="raise"``): verify only this rank's share of the
    pictures and look for the others' (:class:`~urlkit.data.picture_checks.PictureShare`).
    ``instruction`` and ``category`` override ``dataset.json`` (and the category inferred
    from the modalities). ``pool`` and ``image_root`` are for M-BEIR only: the candidate
    pool file and the folder its image paths are relative to (both found from the M-BEIR
    layout when left out). ``dataset`` names the dataset inside an M-BEIR root
    (``cirr_task7``); ``instructions`` and ``instruction_seed``: M-BEIR's instruction file
    is read and each query's prompt chosen by (seed, query id) (urlkit.data.mbeir).
    ``held_out_splits`` (a training split's dev and test): the documents their queries judge
    become ``Split.held_out``, never a training negative (see :func:`judged_documents`).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    policy = ErrorPolicy(on_error, check_pictures, picture_share)
    fmt = detect_format(path, split) if format == "auto" else format
    if fmt == "jsonl":
        loaded = _load_jsonl_folder(path, split, policy)
    elif fmt == "beir":
        from urlkit.data.beir import load_beir

        loaded = load_beir(path, split, policy)
    elif fmt == "mbeir":
        from urlkit.data.mbeir import load_mbeir, load_mbeir_root

        options = {"pool": pool, "instructions": instructions, "instruction_seed": instruction_seed}
        if path.is_dir():
            loaded = load_mbeir_root(path, dataset or "", split, policy, **options)
        else:
            loaded = load_mbeir(path, split, policy, image_root=image_root, **options)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if instruction is not None:
        loaded.instruction = instruction
    if category is not None:
        loaded.category = category
    elif not loaded.category:
        loaded.category = infer_category(loaded.queries, loaded.corpus)
    loaded.skipped = policy.skipped
    if not loaded.queries:
        raise DataError(f"split {split!r} has no usable query ({loaded.report()})", path=path)
    if held_out_splits:
        _hold_out(loaded, path, fmt, held_out_splits, on_error, dataset)
    return loaded


def judged_documents(path: Path, fmt: str, split: str, policy: ErrorPolicy,
                     dataset: str | None = None) -> set[str]:
    """The doc ids the queries of ``split`` judge, any grade, read from its judgement lines
    alone (urlkit JSONL ``positives``, BEIR ``qrels/<split>.tsv``, M-BEIR's qrels file and
    ``pos_cand_list``): no corpus, no pool, so a training run pays a few reads of small files.
    A :class:`MissingSplitError` when the dataset has no such split."""
    if fmt == "beir":
        from urlkit.data.beir import judged_ids

        return judged_ids(path, split, policy)
    if fmt == "mbeir":
        from urlkit.data.mbeir import judged_ids

        return judged_ids(path, dataset, split, policy)
    split_path = find_data_file(path, split)
    if split_path is None:
        raise MissingSplitError(f"no split {split!r}: expected {split}.jsonl (optionally .gz)", path=path)
    judged: set[str] = set()
    for line_no, record in iter_jsonl(split_path, policy):
        try:
            judged.update(_read_positives(LineFields(record, split_path, line_no)))
        except DataError as err:
            policy.handle(err)
    return judged


def _hold_out(loaded: Split, path: Path, fmt: str, splits: Sequence[str], on_error: str,
              dataset: str | None) -> None:
    """Set ``loaded.held_out`` to the documents of its corpus that the queries of ``splits``
    judge, and say how many in its notes. One corpus serves every split (emoji's, wordsense's,
    BEIR's, an M-BEIR pool read by two splits), so "random from the corpus" or BM25's top-100
    would otherwise show the test's own answers as training negatives. A split the dataset
    lacks holds nothing out; a broken one is the error its evaluation would meet anyway.

    A document that ``loaded``'s own queries name (a judgement, an explicit negative, a pool
    member) stays in play: the dataset puts it in training by design (a WordNet synset that two
    words share, a man page a test page's SEE ALSO names), so holding it out could not keep it
    unseen, only empty pools. What is held out is what training reaches *beyond* its own
    queries: the shared corpus (``random_from=corpus``) and the first stage's top-k."""
    judged: set[str] = set()
    read = []
    for name in dict.fromkeys(splits):
        if name == loaded.split:
            continue
        try:
            judged |= judged_documents(path, fmt, name, ErrorPolicy(on_error), dataset)
        except MissingSplitError:
            continue
        read.append(name)
    judged.intersection_update(loaded.corpus)
    trained = {d for q in loaded.queries for d in (*q.qrels, *q.negatives, *(q.candidates or ()))}
    loaded.held_out = frozenset(judged - trained)
    if read:
        shared = len(judged) - len(loaded.held_out)
        loaded.notes.append(f"{len(loaded.held_out)} documents judged by the {' and '.join(read)} queries "
                            "held out: never training negatives" + (f" ({shared} more that training queries "
                                                                     "name themselves kept)" if shared else ""))


def detect_format(path: Path, split: str) -> str:
    """"jsonl", "beir" or "mbeir" from the files on disk (see the module docstring)."""
    if path.is_dir():
        from urlkit.data.mbeir import is_mbeir_root

        if is_mbeir_root(path):
            return "mbeir"
        if find_data_file(path, "corpus") is None:
            raise DataError(
                "not a dataset folder: no corpus.jsonl[.gz] (urlkit JSONL, BEIR) and no "
                "query/ + cand_pool/ (M-BEIR) in it",
                path=path,
            )
        if find_data_file(path, split) is not None:
            return "jsonl"
        if (path / "qrels").is_dir():
            return "beir"
        raise MissingSplitError(
            f"no split {split!r} here: expected {split}.jsonl[.gz] (urlkit JSONL) or "
            f"qrels/{split}.tsv (BEIR)",
            path=path,
        )
    if zipfile.is_zipfile(path) or path.name.endswith((".tar", ".tar.gz", ".tgz")):  # BEIR downloads zips
        raise DataError("an archive, not a dataset: unpack it and give the folder it holds as data.path "
                        "(a BEIR zip unpacks to <name>/corpus.jsonl, queries.jsonl, qrels/)", path=path)
    first = next((line for _, line in iter_lines(path, ErrorPolicy("raise")) if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        record = None
    if isinstance(record, dict) and "qid" in record and "pos_cand_list" in record:
        return "mbeir"
    raise DataError(
        "cannot tell the data format: give a urlkit JSONL or BEIR folder, or an M-BEIR "
        "query file (lines with 'qid' and 'pos_cand_list')",
        path=path,
    )


def _load_jsonl_folder(folder: Path, split: str, policy: ErrorPolicy) -> Split:
    info = read_dataset_info(folder)
    corpus_path = find_data_file(folder, "corpus")
    split_path = find_data_file(folder, split)
    if corpus_path is None:
        raise DataError("expected corpus.jsonl (optionally .gz)", path=folder)
    if split_path is None:
        raise MissingSplitError(f"no split {split!r}: expected {split}.jsonl (optionally .gz)", path=folder)

    skipped = SkippedDocuments()
    corpus = read_records(corpus_path, policy, lambda fields: check_document(
        Document(
            id=fields.id("id"),
            text=fields.text("text"),
            image=fields.image("image", folder),
            title=fields.text("title"),
        ),
        fields,
    ), "document", skipped, picture=PictureField("image", folder))  # fmt: skip
    queries = read_records(split_path, policy, lambda fields: check_query(
        Query(
            id=fields.id("id"),
            text=fields.text("text"),
            image=fields.image("image", folder),
            instruction=fields.text("instruction"),
            qrels=_read_positives(fields),
            negatives=fields.id_list("negatives") or [],
            candidates=_pool(fields),
        ),
        corpus,
        fields,
        skipped,
    ), "query", picture=PictureField("image", folder))  # fmt: skip

    return Split(
        name=info["name"],
        split=split,
        category=info["category"],
        instruction=info["instruction"],
        corpus=corpus,
        queries=list(queries.values()),
        source=str(folder),
        notes=skipped.notes(),
    )


def _read_positives(fields: LineFields) -> dict[str, int]:
    """``positives``: a list of ids (grade 1 each) or a ``{id: grade}`` dict."""
    value = fields.require("positives")
    if isinstance(value, dict):
        if not all(isinstance(g, int) and not isinstance(g, bool) for g in value.values()):
            raise fields.error("'positives' grades must be integers", "invalid field")
        return {str(doc_id): grade for doc_id, grade in value.items()}
    return dict.fromkeys(fields.id_list("positives", required=True) or [], 1)


def _pool(fields: LineFields) -> list[str] | None:
    """``candidates`` in its order, each id once: a pool merged from several retrievers lists
    some twice, and the first stage ranked each copy, so a query's top-k held fewer documents
    (reranked twice each) and random negatives favoured the repeated ones."""
    pool = fields.id_list("candidates")
    return None if pool is None else list(dict.fromkeys(pool))
