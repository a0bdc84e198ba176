"""Damaged data files: bytes that are not UTF-8, gzip streams cut short or not gzip at all.
Each is a DataError naming the file (and the line where there is one), never a bare
UnicodeDecodeError, EOFError or BadGzipFile."""

from __future__ import annotations

import gzip

import pytest
from helpers.data_builders import corpus_records, jsonl_dataset, train_records

from urlkit.data import DataError, load_split


def _latin1_train(root):
    """A Latin-1 'é' (0xe9) in train.jsonl's second line, as a Windows editor saves it."""
    train = root / "train.jsonl"
    lines = train.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"dog in the park", b"caf\xe9 in the park")
    train.write_bytes(b"\n".join(lines))
    return train


def test_a_byte_that_is_not_utf8_names_its_line_and_skip_counts_it(tmp_path):
    train = _latin1_train(jsonl_dataset(tmp_path))
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed text: byte 0xe9 at byte \d+ ") as err:
        load_split(tmp_path, "train")
    assert err.value.reason == "malformed text" and err.value.path == str(train)
    split = load_split(tmp_path, "train", on_error="skip")
    assert [q.id for q in split.queries] == ["q1", "q3"] and split.skipped == {"malformed text": 1}


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_gzip_stream_cut_short_names_the_file_and_the_last_line_read(tmp_path, on_error):
    corpus = corpus_records() + [{"id": f"x{i}", "text": f"filler document {i} " * 40} for i in range(400)]
    root = jsonl_dataset(tmp_path, corpus=corpus, train=train_records(), gz=True)
    path = root / "corpus.jsonl.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # an interrupted copy
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz: damaged gzip stream, line \d+ is the last "
                                        r"line read whole \(Compressed file ended") as err:
        load_split(root, "train", on_error=on_error)  # skip cannot skip what cannot be read
    last = int(str(err.value).split("line ")[1].split()[0])
    assert 0 < last < len(corpus)


def test_a_plain_file_named_gz_is_an_error_naming_it(tmp_path):
    root = jsonl_dataset(tmp_path)
    (root / "corpus.jsonl").rename(root / "corpus.jsonl.gz")
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz: damaged gzip stream, not one line could "
                                        r"be read \(Not a gzipped file"):
        load_split(root, "train", on_error="skip")


def test_an_mbeir_query_file_that_is_not_gzip_is_named_when_detecting_the_format(tmp_path):
    path = tmp_path / "query.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"qid": "1:1", "pos_cand_list": []}\n')[:-10])
    with pytest.raises(DataError, match=r"query\.jsonl\.gz: damaged gzip stream"):
        load_split(path, "test")


def test_a_beir_zip_given_as_the_dataset_says_to_unpack_it(tmp_path):
    """BEIR's datasets download as zip files; the zip itself was 'malformed text ... (save the
    file as UTF-8)' on its line 1."""
    import zipfile

    from helpers.data_builders import beir_dataset

    root = beir_dataset(tmp_path / "scifact")
    archive = tmp_path / "scifact.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(root.rglob("*")):
            zipped.write(path, path.relative_to(tmp_path))
    with pytest.raises(DataError, match=r"scifact\.zip: an archive, not a dataset: unpack it"):
        load_split(archive, "test")
