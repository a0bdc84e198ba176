"""Probing tables: a final metric's mean +- std over seeds, beside the paper's number.

Columns of :func:`probe_table`, one row per setting (the ``by`` columns):

    n            runs with the metric (seeds; unfinished runs have none)
    mean, std    over those runs, in points (metric x ``scale``, 100 by default; std with ddof=1)
    paper        the paper's MRB average (percent) for that setting, when ``paper`` names a table
    difference   mean - paper (different backbone and data: read it as orientation, not a target)
    delta        mean - mean of the table's first paper row within the same ``within`` group
                 (Table 2: vs the base weight; Table 3: vs the weight's native direction)
    paper_delta  the same difference in the paper: the deltas are what should agree in sign

Settings the paper lists but no run covers stay in the table with n = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from urlkit.analysis.paper import PAPER_TABLES, paper_reference
from urlkit.analysis.runs import Runs
from urlkit.analysis.runset import require_one_setup, seed_labels

DEFAULT_METRIC = "test/ndcg@10"
# the paper reports MRB averages; urlkit sets them beside NDCG@10, its closest single metric.
# For another metric the paper's level means nothing: paper and difference stay empty and
# only paper_delta (the sign to agree with) is kept
PAPER_METRIC = "test/ndcg@10"


def seed_summary(
    runs: Runs, by: Sequence[str], metric: str = DEFAULT_METRIC, scale: float = 100.0
) -> pd.DataFrame:
    """``by`` columns, then n, mean, std of ``metric`` x ``scale`` over the seeds of each group.

    As the findings count them: finished runs only (a run still training has no final metric
    yet, one interrupted a partial one), one value per seed (a seed run twice is averaged,
    not counted twice), and runs of one setup: runs that differ in more than ``by`` (steps,
    negatives, data, ...) are an error naming the key, as they are "mixed setups" to the
    findings, instead of one row averaging both."""
    by = list(by)
    runs = runs.complete()
    known = runs.metric_names
    if len(runs) and metric not in known:  # a misspelt metric would read as n = 0 everywhere
        raise KeyError(f"no finished run has the final metric {metric!r} (final metrics: {', '.join(known) or 'none'})")
    table = runs.final(metric)
    missing = [c for c in by if c not in table]
    if missing:
        known = ", ".join(c for c in table.columns if "." in c or c in ("objective", "seed"))
        raise KeyError(f"no run column {missing}; config columns include: {known}")
    require_one_setup(runs.config, by, f", so no table by {', '.join(by)}")
    table = _normalise_keys(table, by)
    if "seed" not in by:
        table = table.assign(seed=seed_labels(table))
        table = table.groupby([*by, "seed"], dropna=False, sort=False)[metric].mean().reset_index()
    grouped = table.groupby(by, dropna=False, sort=False)[metric]
    stats = grouped.agg(n="count", mean="mean", std="std").reset_index()
    stats[["mean", "std"]] *= scale
    return stats


def probe_table(
    runs: Runs,
    by: Sequence[str] | None = None,
    metric: str = DEFAULT_METRIC,
    paper: str | None = None,
    scale: float = 100.0,
) -> pd.DataFrame:
    """Mean, std and n over seeds per setting; with ``paper``, joined with the paper's table."""
    if paper is None:
        if not by:
            raise ValueError("probe_table needs `by` columns or a `paper` table name")
        return seed_summary(runs, by, metric, scale)
    spec = PAPER_TABLES[paper]
    by = list(by or spec.keys)
    reference = _normalise_keys(paper_reference(paper), spec.keys)
    stats = seed_summary(runs, by, metric, scale)
    table = reference.merge(stats, on=by, how="left")  # the paper's rows, in the paper's order
    extra = stats.merge(reference[by], on=by, how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
    table = pd.concat([table, extra], ignore_index=True)
    table["n"] = table["n"].fillna(0).astype(int)
    table["delta"], table["paper_delta"] = (
        _deltas(table, "mean", spec.within),
        _deltas(table, "paper", spec.within),
    )
    if metric != PAPER_METRIC:
        table["paper"] = float("nan")
    table["difference"] = table["mean"] - table["paper"]
    return table[[*by, "n", "mean", "std", "paper", "difference", "delta", "paper_delta"]]


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str, digits: int = 2) -> list[Path]:
    """``<name>.csv`` and ``<name>.md`` (a Markdown table, rounded) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(format_table(table, digits).to_markdown(index=False, disable_numparse=True) + "\n")
    return [csv_path, md_path]


def format_table(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Numbers as text for display: ``digits`` decimals, but a small setting (tau = 1e-3,
    1e-4) in ``%g`` form rather than rounded to 0.00; NaN as an empty cell."""

    def text(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if pd.isna(value):
            return ""
        if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
            return f"{value:g}" if isinstance(value, float) else str(value)
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:g}"
        return f"{value:.{digits}f}"

    return table.apply(lambda column: column.map(text))


def _deltas(table: pd.DataFrame, column: str, within: Sequence[str]) -> pd.Series:
    """Each row's value minus the group's first row's value (groups of ``within``)."""
    if not within:
        return table[column] - table[column].iloc[0]
    first = table.groupby(list(within), dropna=False, sort=False)[column].transform(
        lambda group: group.iloc[0]
    )
    return table[column] - first


def _normalise_keys(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Float keys rounded (1e-3 read from YAML and from CSV must match exactly)."""
    table = table.copy()
    for key in keys:
        if pd.api.types.is_float_dtype(table[key]):
            table[key] = table[key].map(lambda v: float(f"{v:.12g}"))
    return table
