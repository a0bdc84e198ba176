"""Retrieval metrics (trec_eval) and the paper's Table 4 layout (the paired test: :mod:`urlkit.evaluation.significance`).

No metric is computed by hand here: per-query values come from trec_eval (through
pytrec_eval), so NDCG, recall and MRR mean exactly what the IR community means by them.
(ranx was tried first: its numba JIT cost ~20 s at the start of every process.)
The paper's probing numbers are MRB averages of such metrics over datasets; :func:`category_table` averages per dataset, then
per task category (T2T, T2I, I2T, ...), then over all datasets, as in its Table 4.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

# recall@k is trec_eval's (the share of a query's positives in its top k); success@k is 1 when
# any positive is in the top k: what UniIR's evaluation, and so M-BEIR's tables, call Recall@k.
# They differ on queries with several positives (M-BEIR's WebQA, OVEN, InfoSeek; BEIR's TREC-COVID)
METRICS = ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "success@5", "success@10", "mrr@10")
MAIN_METRIC = "ndcg@10"

Qrels = Mapping[str, Mapping[str, int]]
RunScores = Mapping[str, Mapping[str, float]]


# urlkit metric name -> (trec_eval measure to request, key in pytrec_eval's output)
TREC_EVAL = {
    "ndcg@5": ("ndcg_cut.5", "ndcg_cut_5"),
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10"),
    "recall@5": ("recall.5", "recall_5"),
    "recall@10": ("recall.10", "recall_10"),
    "recall@25": ("recall.25", "recall_25"),
    "success@5": ("success.5", "success_5"),
    "success@10": ("success.10", "success_10"),
    "mrr@10": ("recip_rank", "recip_rank"),  # on the run cut to its top 10, see below
}


def per_query_metrics(qrels: Qrels, run: RunScores, metrics=METRICS) -> pd.DataFrame:
    """One row per query of ``qrels`` (index ``query_id``), one column per metric.

    Values come from trec_eval (pytrec_eval). Two conventions made explicit here:
    ties in the run are broken by the order the run lists documents in (trec_eval would
    break them by document id), and MRR@10 is trec_eval's ``recip_rank`` on each query's
    top 10. A query that the run does not rank scores 0 on every metric (it is not
    dropped), so a reranker that fails on some queries cannot look better than it is.
    """
    import pytrec_eval

    unknown = [m for m in metrics if m not in TREC_EVAL]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(TREC_EVAL)}")
    judged = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    ranked = {q: _strict_order(docs) for q, docs in run.items() if q in judged and docs}
    values = pytrec_eval.RelevanceEvaluator(judged, {TREC_EVAL[m][0] for m in metrics if m != "mrr@10"}).evaluate(ranked)
    if "mrr@10" in metrics:
        top10 = {q: dict(list(docs.items())[:10]) for q, docs in ranked.items()}
        for q, row in pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10).items():
            values.setdefault(q, {})["recip_rank"] = row["recip_rank"]
    frame = pd.DataFrame(
        {m: {q: values.get(q, {}).get(TREC_EVAL[m][1], 0.0) for q in judged} for m in metrics}
    )
    frame.index.name = "query_id"
    return frame.reindex(sorted(judged)).fillna(0.0)[list(metrics)]


def _strict_order(docs: Mapping[str, float]) -> dict[str, float]:
    """Scores rewritten as strictly decreasing ranks (order: score, then the run's own order)."""
    ordered = sorted(enumerate(docs.items()), key=lambda item: (-float(item[1][1]), item[0]))
    n = len(ordered)
    return {doc: float(n - rank) for rank, (_, (doc, _)) in enumerate(ordered)}


def category_table(rows: pd.DataFrame, metric: str = MAIN_METRIC) -> pd.DataFrame:
    """The paper's Table 4 layout from per-dataset means.

    ``rows`` has columns ``model``, ``dataset``, ``category`` and ``metric``. The result has
    one row per model and one column per category, named ``<category>_<n datasets>`` like
    ``T2T_14``, then ``all_<n>``: the mean over datasets (not over categories), in percent.
    """
    per_dataset = rows.groupby(["model", "category", "dataset"], sort=False)[metric].mean() * 100
    per_category = per_dataset.groupby(["model", "category"], sort=False).mean().unstack("category")
    counts = per_dataset.reset_index().groupby("category")["dataset"].nunique()
    per_category.columns = [f"{c}_{counts[c]}" for c in per_category.columns]
    per_category[f"all_{per_dataset.reset_index()['dataset'].nunique()}"] = per_dataset.groupby(
        "model", sort=False
    ).mean()
    return per_category.round(2)
