"""Negatives: deterministic per (seed, epoch, query), hard:random ratio, never a positive."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from urlkit.data import Query, query_rng, sample_negatives

CORPUS = [f"d{i}" for i in range(1000)]
RANKING = [(f"d{i}", 100.0 - i) for i in range(0, 40, 2)]  # 20 even docs, d0 best
HARD_POOL = {d for d, _ in RANKING}


def _query(qid="q1", **kw):
    return Query(id=qid, text="t", qrels=kw.pop("qrels", {"d0": 1, "d2": 2, "d4": 0}), **kw)


def _draw(query, epoch=0, seed=7, n=8, ranking=RANKING, corpus=CORPUS, **kw):
    return sample_negatives(query, ranking, corpus, n, rng=query_rng(seed, epoch, query.id), **kw)


def test_same_seed_and_epoch_give_the_same_negatives_other_epochs_differ():
    query = _query()
    assert _draw(query) == _draw(query)
    assert _draw(query, epoch=1) != _draw(query)
    assert _draw(query, seed=8) != _draw(query)
    assert _draw(_query("q2")) != _draw(query)


def test_query_rng_does_not_depend_on_pythons_hash_seed():
    code = ("from urlkit.data import query_rng; "
            "print(query_rng(3, 1, 'q-42').integers(10**9, size=3).tolist())")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{query_rng(3, 1, 'q-42').integers(10**9, size=3).tolist()}\n"}


@pytest.mark.parametrize(("n", "hard_fraction", "n_hard"), [(8, 0.5, 4), (8, 0.25, 2), (5, 0.5, 3),
                                                           (4, 1.0, 4), (4, 0.0, 0),
                                                           (25, 0.58, 15)])  # 25 x 0.58 + 1/2 is 15 (floats: 14.999...)
def test_hard_random_ratio_is_honoured(n, hard_fraction, n_hard):
    random_in_hard_pool = 0
    for i in range(100):
        negatives = _draw(_query(f"q{i}"), n=n, hard_fraction=hard_fraction)
        assert len(negatives) == len(set(negatives)) == n
        assert set(negatives[:n_hard]) <= HARD_POOL  # hard ones first
        random_in_hard_pool += len(set(negatives[n_hard:]) & HARD_POOL)
    # Random negatives hit the 20 ranked docs of a 1000-doc corpus only by chance (~2%).
    assert random_in_hard_pool <= 0.1 * 100 * (n - n_hard)


def test_positives_are_never_negatives_but_grade_zero_may_be():
    query = _query(qrels={"d0": 1, "d2": 2, "d4": 0}, negatives=["d0", "d4"])
    seen = set()
    for epoch in range(200):
        negatives = _draw(query, epoch=epoch, n=6, hard_fraction=1.0, hard_depth=5)
        seen.update(negatives)
    assert not seen & {"d0", "d2"}
    assert "d4" in seen  # judged non-relevant: a fine hard negative


def test_explicit_negatives_count_as_hard_candidates():
    query = _query(negatives=["d901", "d902"])
    assert sorted(_draw(query, ranking=None, n=2, hard_fraction=1.0)) == ["d901", "d902"]
    depth_one = _draw(query, n=3, hard_fraction=1.0, hard_depth=3)  # top-3 = d0 d2 d4
    assert sorted(depth_one) == ["d4", "d901", "d902"]


def test_random_negatives_come_from_the_query_pool_and_short_pools_give_short_lists():
    query = _query(qrels={"p": 1}, candidates=["p", "a", "b"])
    for epoch in range(20):
        negatives = _draw(query, epoch=epoch, n=5, ranking=None)
        assert sorted(negatives) == ["a", "b"]


def test_each_kind_tops_up_the_other():
    few_hard = [("d0", 2.0), ("d1", 1.0)]  # d0 is a positive: one hard candidate
    negatives = _draw(_query(), n=4, ranking=few_hard, hard_fraction=0.5)
    assert negatives[0] == "d1" and len(set(negatives)) == 4
    pooled = _query(qrels={"p": 1}, candidates=["p", "a"], negatives=["x", "y", "z"])
    negatives = _draw(pooled, n=4, ranking=None, hard_fraction=0.25)
    assert sorted(negatives) == ["a", "x", "y", "z"]


def test_no_duplicates_when_almost_the_whole_corpus_is_drawn():
    corpus = [f"d{i}" for i in range(60)]
    negatives = _draw(_query(), n=55, corpus=corpus, hard_fraction=0.5)
    assert len(negatives) == len(set(negatives)) == 55 and not {"d0", "d2"} & set(negatives)
    assert len(_draw(_query(), n=100, corpus=corpus)) == 58  # everything but the 2 positives


def test_bad_arguments():
    with pytest.raises(ValueError, match="rng"):
        sample_negatives(_query(), RANKING, CORPUS, 4)
    with pytest.raises(ValueError, match="hard_fraction"):
        _draw(_query(), hard_fraction=1.5)
    assert _draw(_query(), n=0) == []
