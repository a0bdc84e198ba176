"""A built benchmark and its deterministic writer (the urlkit JSONL folder format).

A builder turns some source text into a :class:`BuiltDataset`: a list of corpus records and,
per split, a list of query records, both already in the on-disk shape documented in
docs/architecture.md ("urlkit JSONL format")::

    corpus.jsonl.gz   {"id", "text", "title"}
    <split>.jsonl.gz  {"id", "text", "positives": {doc id: grade}, "candidates": [...]}
    dataset.json      {"name", "category", "instruction", "provenance": {...}}
    COPYRIGHT, ...    attachments: the source's licence notice, copied verbatim

:func:`write_dataset` makes the bytes a pure function of the records: keys in a fixed order,
no ASCII escaping, gzip with ``mtime=0`` and no file name in the header. Rebuilding from the
same Debian packages therefore gives byte-identical data files (only ``provenance.built`` in
``dataset.json`` carries the build date).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "dev", "test")


class DatasetBuildError(Exception):
    """The source text of a benchmark is missing or not what the builder expects.

    The message names the file (and line, when there is one) and what to do about it.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


@dataclass
class BuiltDataset:
    """What a builder returns: records ready to be written, plus the numbers behind them."""

    name: str
    category: str
    instruction: str
    corpus: list[dict[str, Any]]
    splits: dict[str, list[dict[str, Any]]]
    provenance: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)  # counts a builder wants reported
    # files copied verbatim into the folder, e.g. {"COPYRIGHT": the source's licence notice}
    attachments: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per split: queries, mean candidate pool size (0 when no pool), mean positives."""
        table = {}
        for split, queries in self.splits.items():
            n = max(len(queries), 1)
            table[split] = {
                "queries": len(queries),
                "mean_candidates": sum(len(q.get("candidates") or []) for q in queries) / n,
                "mean_positives": sum(len(q["positives"]) for q in queries) / n,
            }
        return table


def write_dataset(dataset: BuiltDataset, folder: str | Path) -> Path:
    """Write ``dataset`` as a urlkit JSONL folder; stale files of the same stems are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl_gz(folder, "corpus", dataset.corpus)
    for split in SPLITS:
        if split in dataset.splits:
            _write_jsonl_gz(folder, split, dataset.splits[split])
    info = {
        "name": dataset.name,
        "category": dataset.category,
        "instruction": dataset.instruction,
        "provenance": dataset.provenance,
    }
    (folder / "dataset.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    for name, source in sorted(dataset.attachments.items()):
        if not Path(source).is_file():
            raise DatasetBuildError("file to attach to the dataset not found", path=source)
        shutil.copyfile(source, folder / name)
    return folder


def _write_jsonl_gz(folder: Path, stem: str, records: list[dict[str, Any]]) -> None:
    plain = folder / f"{stem}.jsonl"
    if plain.exists():  # the loader would not know which of the two to read
        plain.unlink()
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(folder / f"{stem}.jsonl.gz", "wb") as raw:
        # filename="" and mtime=0: the gzip header would otherwise carry both.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(payload.encode("utf-8"))


def build_date() -> str:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds convention) as a date, else today (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (
        _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
        if epoch
        else _dt.datetime.now(tz=_dt.timezone.utc)
    )
    return moment.date().isoformat()
