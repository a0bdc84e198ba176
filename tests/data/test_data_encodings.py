"""Files as other tools and editors save them: a UTF-8 byte order mark, Windows line endings.
Valid input is read as if they were not there; never a 'malformed JSON' on line 1, nor a
mark taken into the first id."""

from __future__ import annotations

import pytest
from helpers.data_builders import beir_dataset, jsonl_dataset

from urlkit.data import DataError, load_split

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


def test_beir_qrels_with_a_byte_that_is_not_utf8_name_the_line(tmp_path):
    root = beir_dataset(tmp_path)
    qrels = root / "qrels" / "test.tsv"
    qrels.write_bytes(qrels.read_bytes().replace(b"q2\td6\t0", b"q2\td\xe96\t0"))  # Latin-1
    with pytest.raises(DataError, match=r"test\.tsv:5: malformed text: byte 0xe9"):
        load_split(root, "test")
    split = load_split(root, "test", on_error="skip")
    assert split.skipped == {"malformed text": 1} and split.queries[1].qrels == {"d2": 1}


def test_mbeir_qrels_with_a_byte_order_mark_keep_the_first_querys_grades(tmp_path):
    """The mark made the first qid '\\ufeff7:300': its graded judgements gave way to
    pos_cand_list, silently."""
    from helpers.data_builders import mbeir_tree

    root = mbeir_tree(tmp_path)
    qrels = root / "qrels" / "test" / "mbeir_toy_task7_test_qrels.txt"
    qrels.write_bytes(BOM + b"7:300 0 7:1 1 7\r\n7:300 0 7:5 2 7\r\n")
    split = load_split(root, "test", dataset="toy_task7")
    assert split.queries[0].id == "7:300" and split.queries[0].qrels == {"7:1": 1, "7:5": 2}
    qrels.write_bytes(b"7:300 0 7:1 1 7\n7:300 0 7:\xe95 2 7\n")
    with pytest.raises(DataError, match=r"_qrels\.txt:2: malformed text: byte 0xe9"):
        load_split(root, "test", dataset="toy_task7")


def test_dataset_json_with_a_byte_order_mark_is_read_and_one_not_utf8_is_named(tmp_path):
    root = jsonl_dataset(tmp_path, info={"name": "mine", "category": "T2T", "instruction": "Find it."})
    _windows(root / "dataset.json")
    split = load_split(root, "train")
    assert (split.name, split.instruction) == ("mine", "Find it.")
    (root / "dataset.json").write_bytes(b'{"name": "caf\xe9"}')  # Latin-1
    with pytest.raises(DataError, match=r"dataset\.json: malformed text: byte 0xe9 at byte 14 "):
        load_split(root, "train")


def test_an_mbeir_instruction_file_with_a_byte_that_is_not_utf8_names_the_line(tmp_path):
    from helpers.data_builders import mbeir_tree

    root = mbeir_tree(tmp_path)
    tsv = root / "instructions" / "query_instructions.tsv"
    _windows(tsv)  # a BOM and CRLF read as without
    assert load_split(root, "test", dataset="toy_task7").queries[0].instruction
    tsv.write_bytes(tsv.read_bytes().replace(b"Retrieve", b"R\xe9trieve"))  # Latin-1
    with pytest.raises(DataError, match=r"query_instructions\.tsv:2: malformed text: byte 0xe9"):
        load_split(root, "test", dataset="toy_task7")
