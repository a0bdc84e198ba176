"""Metrics come from trec_eval (pytrec_eval); these tests pin the glue: missing queries, layout, significance."""

import math

import pandas as pd
import pytest

from urlkit.evaluation.metrics import category_table, per_query_metrics
from urlkit.evaluation.significance import paired_test


def test_per_query_metrics_match_hand_values_and_keep_unranked_queries():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
    run = {"q1": {"d1": 0.9, "d2": 0.1}, "q2": {"d5": 1.0, "d3": 0.2}}  # q3 never ranked
    frame = per_query_metrics(qrels, run, metrics=("mrr@10", "ndcg@10", "recall@5"))
    assert list(frame.index) == ["q1", "q2", "q3"]
    assert frame.loc["q1", "mrr@10"] == 1.0
    assert frame.loc["q2", "mrr@10"] == 0.5
    assert frame.loc["q2", "ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert (frame.loc["q3"] == 0).all()  # an unranked query counts as a miss, not as absent


def test_category_table_averages_datasets_then_categories():
    rows = pd.DataFrame(
        [
            {"model": "m", "dataset": "a", "category": "T2T", "ndcg@10": 0.2},
            {"model": "m", "dataset": "b", "category": "T2T", "ndcg@10": 0.4},
            {"model": "m", "dataset": "c", "category": "T2I", "ndcg@10": 0.9},
        ]
    )
    table = category_table(rows)
    assert table.loc["m", "T2T_2"] == pytest.approx(30.0)
    assert table.loc["m", "T2I_1"] == pytest.approx(90.0)
    assert table.loc["m", "all_3"] == pytest.approx(50.0)  # mean over datasets, not categories


def test_paired_test_detects_a_consistent_gain_and_not_noise():
    index = [f"q{i}" for i in range(40)]
    a = pd.Series([0.5] * 40, index=index)
    better = paired_test(a, a + 0.1)
    assert better["diff"] == pytest.approx(0.1)
    assert better["p_value"] < 0.01
    noise = pd.Series([0.5 + (0.1 if i % 2 else -0.1) for i in range(40)], index=index)
    same = paired_test(a, noise)
    assert same["p_value"] > 0.5
    assert same["ci95_low"] < 0 < same["ci95_high"]


def test_ties_follow_the_run_order_and_mrr_is_cut_at_10():
    qrels = {"q": {"d2": 1}, "p": {"x11": 1}}
    # d1 and d2 tie: the run lists d1 first, so d2 is at rank 2 (trec_eval alone would sort by id)
    run = {"q": {"d1": 0.0, "d2": 0.0, "d0": 0.0}, "p": {f"x{i}": 1.0 - i / 100 for i in range(12)}}
    frame = per_query_metrics(qrels, run, metrics=("mrr@10", "recall@10"))
    assert frame.loc["q", "mrr@10"] == 0.5
    assert frame.loc["p", "mrr@10"] == 0.0 and frame.loc["p", "recall@10"] == 0.0  # rank 12


def test_success_is_m_beirs_recall_any_positive_in_the_top_k():
    """UniIR scores M-BEIR's Recall@k as 1 when any positive is in the top k; trec_eval's recall@k
    is the share of the positives there. A query with two positives, one at rank 3 and one at 7:"""
    qrels = {"q": {"a": 1, "b": 1}, "r": {"c": 1}}
    run = {"q": {d: 1.0 - i / 10 for i, d in enumerate(["x", "y", "a", "z", "w", "v", "b"])},
           "r": {d: 1.0 - i / 10 for i, d in enumerate(["x", "y", "z", "w", "v", "c"])}}

    def any_positive_in_top(k, ranked, positives):  # M-BEIR's definition, by hand
        return float(bool(set(ranked[:k]) & set(positives)))

    frame = per_query_metrics(qrels, run, metrics=("recall@5", "success@5", "recall@10", "success@10"))
    for query in ("q", "r"):
        for k in (5, 10):
            assert frame.loc[query, f"success@{k}"] == any_positive_in_top(k, list(run[query]), qrels[query])
    assert frame.loc["q", "recall@5"] == 0.5 and frame.loc["q", "success@5"] == 1.0
    assert frame.loc["q", "recall@10"] == frame.loc["q", "success@10"] == 1.0
    assert frame.loc["r", "success@5"] == 0.0 and frame.loc["r", "success@10"] == 1.0  # rank 6

