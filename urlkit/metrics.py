"""Retrieval metrics (ranx), the paper's Table 4 layout, and a paired significance test.

No metric is computed by hand here: per-query values come from ranx, so NDCG, recall and
MRR mean exactly what the IR community means by them. The paper's probing numbers are MRB
averages of such metrics over datasets; :func:`category_table` averages per dataset, then
per task category (T2T, T2I, I2T, ...), then over all datasets, as in its Table 4.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

METRICS = ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")
MAIN_METRIC = "ndcg@10"

Qrels = Mapping[str, Mapping[str, int]]
RunScores = Mapping[str, Mapping[str, float]]


def per_query_metrics(qrels: Qrels, run: RunScores, metrics=METRICS) -> pd.DataFrame:
    """One row per query of ``qrels`` (index ``query_id``), one column per metric.

    A query that the run does not rank scores 0 on every metric (it is not dropped), so
    rerankers that fail on some queries cannot look better than they are.
    """
    import ranx  # numba-compiled: imported lazily so `import urlkit` stays fast

    judged = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    ranked = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in judged}
    for q in judged:  # ranx wants every query present in both; an empty ranking scores 0
        ranked.setdefault(q, {})
    if not any(ranked.values()):
        return pd.DataFrame(0.0, index=pd.Index(sorted(judged), name="query_id"), columns=list(metrics))
    ranx_qrels, ranx_run = ranx.Qrels(judged), ranx.Run(_non_empty(ranked))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's uint64 -> int64 cast notice
        values = ranx.evaluate(ranx_qrels, ranx_run, list(metrics), return_mean=False, make_comparable=True)
    if len(metrics) == 1:
        values = {metrics[0]: values}
    frame = pd.DataFrame(values, index=pd.Index(list(ranx_qrels.keys()), name="query_id"))
    return frame.reindex(sorted(judged)).fillna(0.0)[list(metrics)]


def _non_empty(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    # ranx.Run rejects empty rankings; make_comparable fills the missing queries with zeros
    return {q: docs for q, docs in run.items() if docs}


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


def paired_test(a: pd.Series, b: pd.Series, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired randomisation test and bootstrap interval for mean(b) - mean(a) over shared queries.

    ``a`` and ``b`` are per-query values of one metric indexed by query id (two evaluation
    outputs of the same queries). Uses scipy's permutation test (sign flips of the paired
    differences) and its bootstrap (percentile interval).
    """
    from scipy import stats

    shared = a.index.intersection(b.index)
    if len(shared) < 2:
        raise ValueError(f"the two evaluations share {len(shared)} queries; a paired test needs at least 2")
    x, y = a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float)
    rng = np.random.default_rng(seed)

    def mean_diff(u, v, axis=-1):
        return np.mean(v - u, axis=axis)

    test = stats.permutation_test(
        (x, y), mean_diff, permutation_type="samples", n_resamples=n_resamples, random_state=rng
    )
    diff = y - x
    if np.allclose(diff, diff[0]):  # bootstrap of a constant is degenerate
        low = high = float(diff[0])
    else:
        ci = stats.bootstrap((diff,), np.mean, n_resamples=n_resamples, random_state=rng, method="percentile")
        low, high = float(ci.confidence_interval.low), float(ci.confidence_interval.high)
    return {
        "queries": int(len(shared)),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "diff": float(diff.mean()),
        "ci95_low": low,
        "ci95_high": high,
        "p_value": float(test.pvalue),
    }
