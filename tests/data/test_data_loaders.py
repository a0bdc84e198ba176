"""Loaders: urlkit JSONL (plain and gzip), BEIR, M-BEIR, and every kind of bad input."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers.data_builders import (
    beir_dataset,
    corpus_records,
    jsonl_dataset,
    mbeir_root,
    train_records,
    write_image,
    write_jsonl,
)

from urlkit.data import DataError, load_split


def _error_location(err: pytest.ExceptionInfo, path: Path, line: int) -> None:
    """The message starts with '<file>:<line>: '."""
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert err.value.line == line


# --- urlkit JSONL --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_folder_loads_queries_grades_pools_and_info(tmp_path, gz):
    info = {"name": "animals", "category": "T2T", "instruction": "Find the passage."}
    split = load_split(jsonl_dataset(tmp_path, gz=gz, info=info), "train")
    assert (split.name, split.split, split.category) == ("animals", "train", "T2T")
    assert split.instruction == "Find the passage."
    assert set(split.corpus) == {f"d{i}" for i in range(1, 9)}
    assert split.corpus["d3"].title == "Hammers"
    q1, q2, q3 = split.queries
    assert q1.qrels == {"d1": 1, "d5": 1} and q1.positives == ["d1", "d5"]
    assert q2.qrels == {"d2": 2, "d6": 0} and q2.positives == ["d2"]  # grade 0: judged non-relevant
    assert q2.negatives == ["d6"]
    assert q3.candidates == ["d3", "d4", "d7"] and q1.candidates is None
    assert not split.skipped
    assert split.report().startswith("animals/train [T2T]: 3 queries, 8 documents; nothing skipped")


def test_jsonl_overrides_and_inferred_category_with_images(tmp_path):
    write_image(tmp_path / "images" / "d1.png")
    corpus = corpus_records()
    corpus[0] = {"id": "d1", "image": "images/d1.png"}  # image-only document
    train = [{"id": "q1", "text": "a picture of a cat", "positives": ["d1"]}]
    split = load_split(jsonl_dataset(tmp_path, corpus=corpus, train=train), "train",
                       instruction="Retrieve an image.")
    image = split.corpus["d1"].image
    assert Path(image).is_absolute() and Path(image) == (tmp_path / "images" / "d1.png").resolve()
    assert split.category == "T2I"  # inferred: text query, image positive
    assert split.instruction == "Retrieve an image." and split.name == tmp_path.name
    assert load_split(tmp_path, "train", category="X2Y").category == "X2Y"


# --- BEIR ----------------------------------------------------------------------------------


def test_beir_folder_is_detected_and_keeps_only_judged_queries(tmp_path):
    split = load_split(beir_dataset(tmp_path), "test")
    assert [q.id for q in split.queries] == ["q1", "q2"]  # q3 has qrels only in train
    assert split.queries[0].qrels == {"d1": 1, "d5": 2}
    assert split.queries[1].qrels == {"d2": 1, "d6": 0}
    assert split.corpus["d1"].title == "Cats" and split.category == "T2T"
    train = load_split(tmp_path, "train", format="beir")
    assert [q.id for q in train.queries] == ["q3"]


def test_beir_missing_split_names_the_available_ones(tmp_path):
    beir_dataset(tmp_path)
    for fmt in ("auto", "beir"):
        with pytest.raises(DataError, match=r"no qrels for split 'dev'; available: \['test', 'train'\]"):
            load_split(tmp_path, "dev", format=fmt)


@pytest.mark.parametrize(
    ("qrels", "line", "reason"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", 3, "unknown query id 'q9'"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td99\t1\n", 3, "unknown doc id 'd99'"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\n", 3, "'q2' has no positive"),
        ("query-id\tcorpus-id\tscore\nq1\td1\nq2\td2\t1\n", 2, "got 2 columns"),
        ("query-id\tcorpus-id\tscore\nq1\td1\tyes\n", 2, "'yes' is not an integer grade"),
    ],
)
def test_beir_bad_qrels_lines_name_file_and_line(tmp_path, qrels, line, reason):
    beir_dataset(tmp_path, qrels=qrels)
    with pytest.raises(DataError, match=re.escape(reason)) as err:
        load_split(tmp_path, "test")
    _error_location(err, tmp_path / "qrels" / "test.tsv", line)


# --- M-BEIR --------------------------------------------------------------------------------


def test_mbeir_query_file_finds_its_pool_and_image_root(tmp_path):
    query_file = mbeir_root(tmp_path)
    split = load_split(query_file, "test")
    assert split.name == "toy_task7" and [q.id for q in split.queries] == ["7:10", "7:11"]
    first = split.queries[0]
    assert first.image == str((tmp_path / "mbeir_images/toy_images/q1.jpg").resolve())
    assert first.text == "make it blue" and first.positives == ["7:1"]
    assert first.negatives == ["7:2"]
    assert split.corpus["7:1"].image.endswith("c1.jpg") and split.corpus["7:1"].text == ""
    assert split.corpus["7:3"].text == "a red car" and split.corpus["7:3"].image is None
    assert split.category == "IT2I"  # image+text query, image positive (a 1:1 tie goes to the first seen)


def test_mbeir_explicit_pool_and_missing_pool(tmp_path):
    query_file = mbeir_root(tmp_path / "mbeir")
    pool = tmp_path / "mbeir" / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl"
    moved = pool.rename(tmp_path / "my_pool.jsonl")
    with pytest.raises(DataError, match="no M-BEIR candidate pool found.*data.pool.test=<file>"):
        load_split(query_file, "test")
    assert len(load_split(query_file, "test", pool=moved).corpus) == 3


def test_mbeir_missing_query_image_names_file_and_line(tmp_path):
    queries = [
        {"qid": "7:10", "query_txt": "x", "query_img_path": None, "pos_cand_list": ["7:1"]},
        {"qid": "7:11", "query_txt": "y", "query_img_path": "mbeir_images/nope.jpg",
         "pos_cand_list": ["7:1"]},
    ]
    query_file = mbeir_root(tmp_path, queries=queries)
    with pytest.raises(DataError, match="image file not found: mbeir_images/nope.jpg") as err:
        load_split(query_file, "test")
    _error_location(err, query_file, 2)


# --- bad input in urlkit JSONL: each error names the file and the line ---------------------


def _bad_corpus(line: str | dict) -> tuple[list, list, str, int]:
    corpus = corpus_records()
    corpus.insert(2, line)
    return corpus, train_records(), "corpus.jsonl", 3


def _bad_train(line: str | dict) -> tuple[list, list, str, int]:
    train = train_records()
    train.insert(1, line)
    return corpus_records(), train, "train.jsonl", 2


BAD_INPUTS = {
    "malformed JSON": (_bad_train('{"id": "q9", "text": "oops"'), "malformed JSON"),
    "not an object": (_bad_corpus("[1, 2]"), "expected a JSON object"),
    "missing image": (_bad_corpus({"id": "d9", "image": "images/none.png"}),
                      "image file not found: images/none.png"),
    "no positive": (_bad_train({"id": "q9", "text": "t", "positives": []}),
                    "'q9' has no positive"),
    "only grade 0": (_bad_train({"id": "q9", "text": "t", "positives": {"d1": 0}}),
                     "'q9' has no positive"),
    "unknown doc id": (_bad_train({"id": "q9", "text": "t", "positives": ["d42"]}),
                       "unknown doc ids ['d42']"),
    "unknown negative": (_bad_train({"id": "q9", "text": "t", "positives": ["d1"],
                                     "negatives": ["zz"]}), "unknown doc ids ['zz']"),
    "empty document": (_bad_corpus({"id": "d9", "text": "  ", "title": ""}),
                       "document 'd9' is empty"),
    "empty query": (_bad_train({"id": "q9", "positives": ["d1"]}), "query 'q9' is empty"),
    "missing positives": (_bad_train({"id": "q9", "text": "t"}),
                          "missing required field 'positives'"),
    "missing id": (_bad_corpus({"text": "no id"}), "missing required field 'id'"),
    "duplicate id": (_bad_corpus({"id": "d1", "text": "again"}), "duplicate document id 'd1'"),
    "positive outside pool": (_bad_train({"id": "q9", "text": "t", "positives": ["d1"],
                                          "candidates": ["d2", "d3"]}),
                              "are not in its candidates"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_jsonl_input_raises_naming_file_and_line(tmp_path, case):
    (corpus, train, file_name, line), message = BAD_INPUTS[case]
    jsonl_dataset(tmp_path, corpus=corpus, train=train)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        load_split(tmp_path, "train")
    _error_location(err, tmp_path / file_name, line)


def test_skip_mode_drops_and_counts_every_bad_line_by_reason(tmp_path):
    corpus = corpus_records() + [
        '{"id": "d9"',                                   # malformed JSON
        {"id": "d10", "image": "images/missing.png"},     # missing image
        {"id": "d11", "text": ""},                        # empty document
    ]
    train = train_records() + [
        {"id": "q4", "text": "t", "positives": []},       # no positive
        {"id": "q5", "text": "t", "positives": ["d10"]},  # its positive's document was skipped
        {"id": "q6", "positives": ["d1"], "text": 3},     # wrong type
        {"text": "t", "positives": ["d1"]},               # missing id
    ]
    split = load_split(jsonl_dataset(tmp_path, corpus=corpus, train=train), "train",
                       on_error="skip")
    assert [q.id for q in split.queries] == ["q1", "q2", "q3"] and len(split.corpus) == 8
    assert split.skipped == {"malformed JSON": 1, "missing image": 1, "empty document": 1,
                             "no positive": 1, "positive's document skipped": 1, "invalid field": 1,
                             "missing field": 1}
    report = split.report()
    assert "skipped 7 input lines" in report and "1 missing image" in report


def test_nothing_usable_is_an_error_not_an_empty_split(tmp_path):
    jsonl_dataset(tmp_path, train=[{"id": "q1", "text": "t", "positives": []}])
    with pytest.raises(DataError, match="no usable query.*1 no positive"):
        load_split(tmp_path, "train", on_error="skip")


def test_unrecognised_paths_and_options(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="no corpus.jsonl"):
        load_split(tmp_path, "train")
    other = write_jsonl(tmp_path / "other.jsonl", [{"a": 1}])
    with pytest.raises(DataError, match="cannot tell the data format"):
        load_split(other, "test")
    jsonl_dataset(tmp_path / "ok")
    with pytest.raises(ValueError, match="on_error"):
        load_split(tmp_path / "ok", "train", on_error="ignore")
    (tmp_path / "ok" / "dataset.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset.json:1: malformed JSON"):
        load_split(tmp_path / "ok", "train")


def test_beir_skip_mode_counts_bad_qrels_and_unjudged_positives(tmp_path):
    qrels = ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq1\td99\t1\n"
             "q2\td2\t0\nq1\td1\t2\n")
    split = load_split(beir_dataset(tmp_path, qrels=qrels), "test", on_error="skip")
    assert [q.id for q in split.queries] == ["q1"] and split.queries[0].qrels == {"d1": 1}
    # the judgement of d99, absent from the corpus, is kept for the metrics (as BEIR keeps it)
    assert split.queries[0].absent_qrels == {"d99": 1}
    assert split.skipped == {"unknown query id": 1, "no positive": 1, "duplicate judgement": 1}


def test_a_pool_listing_a_document_twice_is_ranked_with_each_document_once(tmp_path):
    from urlkit.data import first_stage

    train = [{"id": "q1", "text": "cutting wood", "positives": ["d4"],
              "candidates": ["d3", "d4", "d3", "d7", "d4", "d1"]}]
    split = load_split(jsonl_dataset(tmp_path, train=train), "train")
    assert split.queries[0].candidates == ["d3", "d4", "d7", "d1"]
    for retriever in ("pool", "bm25"):
        ranked = [doc for doc, _ in first_stage(split, retriever, k=4, cache=False)["q1"]]
        assert sorted(ranked) == ["d1", "d3", "d4", "d7"], retriever  # four documents in the top 4


def _damaged_png(path: Path) -> Path:
    """A PNG whose pixel data is damaged (a byte of its IDAT chunk flipped): a batch reading it
    would fail, hours into training."""
    data = bytearray(write_image(path).read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", ["flipped byte", "not a picture", "empty file"])
def test_a_corrupt_picture_is_found_when_the_data_is_loaded(tmp_path, damage):
    from urlkit.data.images import read_image

    path = tmp_path / "images" / "d9.png"
    if damage == "flipped byte":
        _damaged_png(path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"<html>404</html>" if damage == "not a picture" else b"")
    with pytest.raises(DataError):
        read_image(path)  # what a training batch would meet
    corpus = corpus_records()
    corpus.insert(2, {"id": "d9", "image": "images/d9.png"})
    train = [*train_records(), {"id": "q4", "text": "a picture", "positives": ["d9", "d1"]}]
    jsonl_dataset(tmp_path, corpus=corpus, train=train)
    with pytest.raises(DataError, match=r"unreadable image images/d9\.png") as err:
        load_split(tmp_path, "train")
    _error_location(err, tmp_path / "corpus.jsonl", 3)
    assert err.value.reason == "unreadable image"
    split = load_split(tmp_path, "train", on_error="skip")  # skipped and counted, its query kept
    assert "d9" not in split.corpus and split.skipped == {"unreadable image": 1}
    assert next(q for q in split.queries if q.id == "q4").positives == ["d1"]


def test_pictures_are_checked_once_and_again_when_rewritten(tmp_path, monkeypatch):
    from PIL import Image

    from urlkit.data import images

    monkeypatch.setattr(images, "RACY_NS", 0)  # a picture written just now is re-read until it is older

    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **kw: opened.append(path) or real_open(path, *a, **kw))
    write_image(tmp_path / "images" / "d1.png")
    corpus = [{"id": "d1", "image": "images/d1.png"}, *corpus_records()[1:]]
    train = [{"id": "q1", "text": "red", "positives": ["d1"]}, {"id": "q2", "text": "x", "positives": ["d2"]}]
    jsonl_dataset(tmp_path, corpus=corpus, train=train)
    load_split(tmp_path, "train")
    load_split(tmp_path, "train")
    assert len(opened) == 1  # the second load (dev, test, a suite) reads the check from the cache
    stamp = (tmp_path / "images" / "d1.png").stat().st_mtime_ns
    os.utime(_damaged_png(tmp_path / "images" / "d1.png"), ns=(stamp + 10**9, stamp + 10**9))  # a later write
    with pytest.raises(DataError, match="unreadable image"):
        load_split(tmp_path, "train")
