"""First stage: BM25 over the corpus or within a query's pool, the disk cache, TREC runs."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.data_builders import jsonl_dataset, write_image

import urlkit.data.candidates as candidates
from urlkit.data import (
    DataError,
    Query,
    bm25_candidates,
    first_stage,
    load_split,
    query_rng,
    read_trec_run,
    sample_negatives,
    write_trec_run,
)


@pytest.fixture
def split(tmp_path):
    train = [
        {"id": "q1", "text": "dog in the park", "positives": ["d2"]},
        {"id": "q2", "text": "parrot", "positives": ["d8"]},
        {"id": "q3", "text": "hammer", "positives": ["d3"], "candidates": ["d4", "d7", "d3", "d2"]},
    ]
    return load_split(jsonl_dataset(tmp_path / "data", train=train), "train")


def test_bm25_retrieves_only_matching_documents_without_a_pool(split, tmp_path):
    ranking = bm25_candidates(split, k=3, cache_dir=tmp_path / "cache")
    assert ranking["q1"][0][0] == "d2"  # "dog" and "park"
    assert ranking["q1"][1][0] == "d6"  # "dog" only
    # as Lucene: no zero-score documents (they would be the corpus's first, d1 and d2, for
    # every low-overlap query, and so its "hard" negatives)
    assert [d for d, _ in ranking["q2"]] == ["d8"]
    assert all(score > 0 for q in ("q1", "q2") for _, score in ranking[q])
    scores = [s for _, s in ranking["q1"]]
    assert scores == sorted(scores, reverse=True)


def test_bm25_ties_keep_the_corpus_order(tmp_path):
    corpus = [{"id": f"d{i}", "text": "same words here"} for i in (3, 1, 2)]
    corpus.append({"id": "d9", "text": "nothing shared"})
    train = [{"id": "q", "text": "same words", "positives": ["d1"]}]
    split = load_split(jsonl_dataset(tmp_path / "data", corpus=corpus, train=train), "train")
    assert [d for d, _ in bm25_candidates(split, k=10, cache=False)["q"]] == ["d3", "d1", "d2"]


def test_a_query_sharing_no_term_with_the_corpus_has_no_candidates_and_no_hard_negatives(
        split, tmp_path):
    split.queries.append(Query(id="q4", text="zebra", qrels={"d1": 1}))
    ranking = bm25_candidates(split, k=5, cache=False)
    assert ranking["q4"] == []
    negatives = sample_negatives(split.queries[-1], ranking["q4"], list(split.corpus), n=4,
                                 hard_fraction=1.0, rng=query_rng(0, 0, "q4"))
    assert len(negatives) == 4 and "d1" not in negatives  # random ones top up


def test_bm25_ranks_within_the_query_pool(split, tmp_path):
    ranking = bm25_candidates(split, k=10, cache_dir=tmp_path / "cache")
    assert [d for d, _ in ranking["q3"]] == ["d3", "d4", "d7", "d2"]  # scored, then pool order
    assert ranking["q3"][0][1] > 0 and all(s == 0.0 for _, s in ranking["q3"][1:])
    # a pool is the task: all of it is ranked, its zero-score members too
    assert len(ranking["q3"]) == 4


def test_bm25_cache_hit_skips_the_retriever_and_content_change_misses(split, tmp_path,
                                                                      monkeypatch):
    cache = tmp_path / "cache"
    built = bm25_candidates(split, k=5, cache_dir=cache)
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["q2"][0][0] == "d8"

    def no_retrieval(*_):
        raise AssertionError("BM25 ran although the cache holds this ranking")

    monkeypatch.setattr(candidates, "_bm25_rank", no_retrieval)
    assert first_stage(split, "bm25", k=5, cache_dir=cache) == built
    split.queries[0] = Query(id="q1", text="dog", qrels={"d2": 1})  # content changed: a miss
    with pytest.raises(AssertionError, match="BM25 ran"):
        bm25_candidates(split, k=5, cache_dir=cache)
    with pytest.raises(AssertionError, match="BM25 ran"):  # so is another k
        bm25_candidates(split, k=4, cache_dir=cache)


def test_cache_writes_are_atomic_under_concurrent_builders(split, tmp_path):
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: bm25_candidates(split, k=4, cache_dir=cache), range(4)))
    assert all(r == results[0] for r in results)
    assert [p.suffix for p in cache.iterdir()] == [".json"]  # no temp file left behind
    assert candidates._read_cache(next(cache.iterdir())) == results[0]


def test_bm25_refuses_image_only_queries_and_suggests_a_run_file(tmp_path):
    write_image(tmp_path / "q.png")
    train = [{"id": "q1", "image": "q.png", "positives": ["d1"]}]
    split = load_split(jsonl_dataset(tmp_path, train=train), "train")
    with pytest.raises(DataError, match="'q1'.*no text.*TREC run file"):
        first_stage(split, "bm25", k=5, cache=False)


def test_trec_run_round_trip_and_first_stage(split, tmp_path):
    run = {"q1": [("d2", 3.5), ("d6", 1.25)], "q2": [("d8", 2.0), ("d1", 0.5), ("d3", 0.0)],
           "q3": [("d3", 1.0)], "other": [("d1", 1.0)]}
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="bm25")
    assert path.read_text().splitlines()[0] == "q1 Q0 d2 1 3.500000 bm25"
    assert read_trec_run(path) == run
    ranking = first_stage(split, "trec", k=2, run_file=path)
    assert ranking == {"q1": run["q1"], "q2": run["q2"][:2], "q3": run["q3"]}  # no "other"


def test_trec_run_is_sorted_by_score(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 a 2 1.0 t\nq1 Q0 b 1 5.0 t\nq1 Q0 c 3 1.0 t\n")
    assert read_trec_run(path) == {"q1": [("b", 5.0), ("a", 1.0), ("c", 1.0)]}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
        ("q1 Q0 d1 1 2.0 t\n\nq1 Q0 d2 x 1.0 t\n", 3, "rank 'x' must be an integer"),
        ("q1 Q0 d1 1 high t\n", 1, "score 'high'"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", 2, "doc 'd1' appears twice"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 nan t\n", 2, "score 'nan' is not a number"),  # no order with NaN
    ],
)
def test_bad_trec_lines_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "run.trec"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_trec_run(path)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_trec_first_stage_needs_every_query_and_known_documents(split, tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q1": [("d2", 1.0)], "q2": [("d8", 1.0)]})
    with pytest.raises(DataError, match=r"no candidates for 1 of the 3 queries.*'q3'"):
        first_stage(split, "trec", k=5, run_file=path)
    write_trec_run(path, {"q1": [("d2", 1.0)], "q2": [("dX", 1.0)], "q3": [("d3", 1.0)]})
    with pytest.raises(DataError, match=r"'q2' ranks doc ids not in the corpus.*'dX'"):
        first_stage(split, "trec", k=5, run_file=path)
    with pytest.raises(ValueError, match="run_file"):
        first_stage(split, "trec", k=5)


def test_a_run_file_saved_with_a_byte_order_mark_keeps_its_first_candidate(split, tmp_path):
    """The mark made the first line a query of its own ('\\ufeffq1'): q1 lost its top document."""
    run = {"q1": [("d2", 3.5), ("d6", 1.25)], "q2": [("d8", 2.0)], "q3": [("d3", 1.0)]}
    path = tmp_path / "run.trec"
    write_trec_run(path, run)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert read_trec_run(path) == run
    assert first_stage(split, "trec", k=5, run_file=path)["q1"] == run["q1"]


def test_a_gzip_run_file_is_read_and_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    import gzip

    path = tmp_path / "run.trec.gz"
    path.write_bytes(gzip.compress(b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\n"))
    assert read_trec_run(path) == {"q1": [("d1", 2.0), ("d2", 1.0)]}
    latin1 = tmp_path / "run.trec"
    latin1.write_bytes(b"q1 Q0 d1 1 2.0 t\nq1 Q0 caf\xe9 2 1.0 t\n")
    with pytest.raises(DataError, match=r"run\.trec:2: malformed text: byte 0xe9"):
        read_trec_run(latin1)
