"""on_error=skip drops a bad corpus line; the queries that name its document keep the rest.

One missing emoji picture dropped 14 of emoji_t2i's training queries as "unknown doc id"
because the document was among their candidates: now the document leaves their candidates,
negatives and judgements (counted in the split's notes), and only a query left with no
positive is skipped, as "positive's document skipped"."""

from __future__ import annotations

import pytest
from helpers.data_builders import corpus_records, jsonl_dataset, mbeir_root

from urlkit.data import DataError, load_split

MISSING_PICTURE = {"id": "d9", "image": "images/missing.png"}


def _train() -> list[dict]:
    return [
        {"id": "q1", "text": "cats", "positives": ["d1"], "negatives": ["d9", "d2"],
         "candidates": ["d1", "d9", "d3"]},                                 # keeps d1, d2, d3
        {"id": "q2", "text": "dogs", "positives": {"d9": 2, "d2": 1, "d6": 0}},  # keeps d2
        {"id": "q3", "text": "lost", "positives": ["d9"]},                 # loses its only positive
        {"id": "q4", "text": "typo", "positives": ["d1"], "negatives": ["d42"]},  # truly unknown
    ]


def test_a_skipped_document_leaves_the_queries_that_name_it(tmp_path):
    root = jsonl_dataset(tmp_path, corpus=corpus_records() + [MISSING_PICTURE], train=_train())
    split = load_split(root, "train", on_error="skip")
    queries = {q.id: q for q in split.queries}
    assert list(queries) == ["q1", "q2"]
    assert queries["q1"].negatives == ["d2"] and queries["q1"].candidates == ["d1", "d3"]
    assert queries["q2"].qrels == {"d2": 1, "d6": 0} and queries["q2"].positives == ["d2"]
    assert split.skipped == {"missing image": 1, "positive's document skipped": 1, "unknown doc id": 1}
    assert "3 references to skipped documents taken out of the candidates, negatives and judgements of 2 queries" in split.report()
    with pytest.raises(DataError, match="image file not found"):
        load_split(root, "train")  # raise: the first bad line stops the load, as before


def test_a_document_skipped_then_given_again_is_not_taken_out(tmp_path):
    # the id's first line is bad, a later line is good: the document exists
    corpus = corpus_records() + [MISSING_PICTURE, {"id": "d9", "text": "a good line"}]
    split = load_split(jsonl_dataset(tmp_path, corpus=corpus, train=_train()), "train", on_error="skip")
    assert [q.id for q in split.queries] == ["q1", "q2", "q3"]
    assert split.queries[0].candidates == ["d1", "d9", "d3"] and "references" not in split.report()


def test_an_mbeir_candidate_skipped_leaves_the_queries_that_name_it(tmp_path):
    query_file = mbeir_root(tmp_path)
    (tmp_path / "mbeir_images" / "toy_images" / "c2.jpg").unlink()  # candidate 7:2's picture
    split = load_split(query_file, "test", on_error="skip")
    assert [q.id for q in split.queries] == ["7:10"] and split.queries[0].negatives == []
    assert split.skipped == {"missing image": 1, "positive's document skipped": 1}
    assert "1 reference to skipped documents taken out of the candidates, negatives and judgements of 1 query" in split.report()
