"""Files as other tools and editors save them: a UTF-8 byte order mark, Windows line endings.
Valid input is read as if they were not there; never a 'malformed JSON' on line 1, nor a
mark taken into the first id."""

from __future__ import annotations

import pytest
from helpers.data_builders import beir_dataset, jsonl_dataset

from urlkit.data import load_split

BOM = b"\xef\xbb\xbf"


def _windows(path):
    """``path`` rewritten as a Windows editor saves UTF-8: a byte order mark and CRLF."""
    path.write_bytes(BOM + path.read_bytes().replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("gz", [False, True])
def test_urlkit_jsonl_with_a_byte_order_mark_reads_as_without(tmp_path, gz):
    plain = load_split(jsonl_dataset(tmp_path / "plain"), "train")
    root = jsonl_dataset(tmp_path / "bom")
    for name in ("corpus.jsonl", "train.jsonl"):
        _windows(root / name)
    if gz:
        import gzip

        for name in ("corpus.jsonl", "train.jsonl"):
            (root / f"{name}.gz").write_bytes(gzip.compress((root / name).read_bytes()))
            (root / name).unlink()
    split = load_split(root, "train")
    assert split.corpus == plain.corpus and split.queries == plain.queries and not split.skipped


def test_beir_corpus_and_queries_with_a_byte_order_mark_read_as_without(tmp_path):
    plain = load_split(beir_dataset(tmp_path / "plain"), "test")
    root = beir_dataset(tmp_path / "bom")
    for name in ("corpus.jsonl", "queries.jsonl"):
        _windows(root / name)
    split = load_split(root, "test", on_error="skip")  # skip would hide a refused first line
    assert split.corpus == plain.corpus and split.queries == plain.queries and not split.skipped
