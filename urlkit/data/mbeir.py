"""M-BEIR JSONL (Wei et al., 2024, UniIR): a query file plus a candidate pool file.

    query/test/mbeir_cirr_task7_test.jsonl
        {"qid": "7:1", "query_txt": "...", "query_img_path": "mbeir_images/...",
         "query_modality": "image,text", "pos_cand_list": ["7:9"], "neg_cand_list": [],
         "task_id": 7}
    cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl
        {"did": "7:9", "txt": null, "img_path": "mbeir_images/...", "modality": "image"}

Image paths are relative to the M-BEIR root (the folder holding ``query/`` and
``cand_pool/``). ``neg_cand_list`` becomes ``Query.negatives``. ``query_modality``,
``modality`` and ``task_id`` are not needed: modalities follow from which of text and image
a line has, and the task category is inferred from them (e.g. "IT2I" for CIRR).
M-BEIR's instruction file is not read; pass ``instruction=`` to ``load_split``.
"""

from __future__ import annotations

from pathlib import Path

from urlkit.data.format import DataError, Document, Query, Split
from urlkit.data.reading import ErrorPolicy, check_document, check_query, read_records

SPLIT_NAMES = ("train", "val", "dev", "test", "union_train", "union_val")


def load_mbeir(
    query_path: Path,
    split: str,
    policy: ErrorPolicy,
    *,
    pool: str | Path | None = None,
    image_root: str | Path | None = None,
) -> Split:
    root = Path(image_root).resolve() if image_root is not None else find_mbeir_root(query_path)
    pool_path = Path(pool).resolve() if pool is not None else find_pool(query_path, root)
    if not pool_path.is_file():
        raise DataError("M-BEIR candidate pool file not found", path=pool_path)

    corpus = read_records(pool_path, policy, lambda fields: check_document(
        Document(
            id=fields.id("did"),
            text=fields.text("txt"),
            image=fields.image("img_path", root),
        ),
        fields,
    ), "candidate")  # fmt: skip
    queries = read_records(query_path, policy, lambda fields: check_query(
        Query(
            id=fields.id("qid"),
            text=fields.text("query_txt"),
            image=fields.image("query_img_path", root),
            qrels=dict.fromkeys(fields.id_list("pos_cand_list", required=True) or [], 1),
            negatives=fields.id_list("neg_cand_list") or [],
        ),
        corpus,
        fields,
    ), "query")  # fmt: skip

    return Split(
        name=_dataset_name(query_path),
        split=split,
        category="",
        instruction="",
        corpus=corpus,
        queries=list(queries.values()),
        source=str(query_path),
    )


def find_mbeir_root(query_path: Path) -> Path:
    """The nearest folder above the query file that holds ``cand_pool/`` or ``mbeir_images/``;
    the query file's own folder when there is none (a small dataset in M-BEIR's format)."""
    for folder in query_path.parents:
        if (folder / "cand_pool").is_dir() or (folder / "mbeir_images").is_dir():
            return folder
    return query_path.parent


def find_pool(query_path: Path, root: Path) -> Path:
    """The local pool M-BEIR pairs with a query file.

    ``mbeir_mscoco_task0_test.jsonl`` -> ``mbeir_mscoco_task0_test_cand_pool.jsonl`` and
    ``mbeir_cirr_task7_test.jsonl`` -> ``mbeir_cirr_task7_cand_pool.jsonl`` (M-BEIR names
    some pools per split, some per task), looked up in ``cand_pool/local/``, ``cand_pool/``
    and next to the query file; a plain ``cand_pool.jsonl`` next to it also works.
    """
    stem = query_path.name.removesuffix(".gz").removesuffix(".jsonl")
    names = [f"{stem}_cand_pool.jsonl"]
    head, _, tail = stem.rpartition("_")
    if tail in SPLIT_NAMES and head:
        names.append(f"{head}_cand_pool.jsonl")
    names.append("cand_pool.jsonl")
    folders = [root / "cand_pool" / "local", root / "cand_pool", query_path.parent]
    tried = [folder / name for name in names for folder in folders]
    for candidate in tried:
        for path in (candidate, candidate.with_name(candidate.name + ".gz")):
            if path.is_file():
                return path
    raise DataError(
        "no M-BEIR candidate pool found for this query file; pass pool=... (data.pool=...). "
        f"Looked for: {', '.join(str(p) for p in tried)}",
        path=query_path,
    )


def _dataset_name(query_path: Path) -> str:
    """``mbeir_cirr_task7_test.jsonl`` -> ``cirr_task7``."""
    stem = query_path.name.removesuffix(".gz").removesuffix(".jsonl").removeprefix("mbeir_")
    head, _, tail = stem.rpartition("_")
    return head if tail in SPLIT_NAMES and head else stem
