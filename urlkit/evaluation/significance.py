"""Paired significance between two evaluations of the same queries (the library of
``python -m urlkit.significance``): a randomisation test with a bootstrap interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from urlkit.errors import UrlkitError


def read_per_query(path: str, metric: str) -> pd.Series:
    """One metric's per-query values from a per-query CSV (``per_query/<dataset>_<split>_<model>.csv``)."""
    try:
        frame = pd.read_csv(path, index_col="query_id", dtype={"query_id": str})
    except (FileNotFoundError, ValueError) as err:
        raise SignificanceInputError(f"{path}: cannot read per-query metrics ({err})") from err
    if metric not in frame.columns:
        raise SignificanceInputError(f"{path}: no column {metric!r}; columns are {', '.join(frame.columns)}")
    # a query listed twice cannot be paired with one value of the other file
    repeated = frame.index[frame.index.duplicated()].unique()
    if len(repeated):
        raise SignificanceInputError(f"{path}: query ids listed more than once: {_some(repeated)}")
    values = pd.to_numeric(frame[metric], errors="coerce")
    missing = values.index[values.isna()]
    if len(missing):
        raise SignificanceInputError(f"{path}: no number in column {metric!r} for queries {_some(missing)}")
    return values


class SignificanceInputError(UrlkitError, ValueError):
    """Per-query values that cannot be compared: a file that cannot be read (the message
    names the file), or two evaluations of different queries."""


def _some(ids, limit: int = 5) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:limit])) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def paired_test(
    a: pd.Series, b: pd.Series, n_resamples: int = 10_000, seed: int = 0, names: tuple[str, str] = ("A", "B")
) -> dict:
    """Paired randomisation test and bootstrap interval for mean(b) - mean(a), query by query.

    ``a`` and ``b`` are per-query values of one metric indexed by query id (two evaluation
    outputs of the same queries, in any order: they are paired by id). Two evaluations of
    different queries are a :class:`SignificanceInputError` naming the queries only one has
    (``names``: how the message calls a and b, e.g. their files): comparing the shared ones
    alone would print means that are neither file's. Uses scipy's permutation test (sign
    flips of the paired differences) and its bootstrap (percentile interval).
    """
    from scipy import stats

    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        sides = [f"{len(ids)} only in {name} ({_some(ids)})" for ids, name in ((only_a, names[0]), (only_b, names[1])) if len(ids)]
        raise SignificanceInputError(
            f"the two evaluations cover different queries: {'; '.join(sides)}; compare evaluations of the "
            "same queries (the same dataset, split and eval.test_queries)"
        )
    shared = a.index
    if len(shared) < 2:
        raise SignificanceInputError(f"the two evaluations share {len(shared)} queries; a paired test needs at least 2")
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
