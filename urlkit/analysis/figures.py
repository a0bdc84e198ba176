"""The figures of the notebooks: seaborn on the tidy tables of :mod:`urlkit.analysis.runs`.

Each function takes :class:`Runs` and returns a matplotlib Figure; :func:`save_figure` writes
it as PNG and PDF. Curves over training are smoothed per run with a trailing moving average
of ``smoothing`` steps, then averaged over seeds (band: +- one standard deviation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from urlkit.analysis.runs import Runs
from urlkit.analysis.runset import require_one_setup, seed_labels

FAMILY_LABEL = {"sft": "$W_{sft}$", "cl": "$W_{cl}$", "base": "$W_{base}$"}
OBJECTIVE_LABEL = {"sft": "SFT", "cl": "CL"}


def smooth(
    steps: pd.DataFrame, window: int, value: str = "value", by: Sequence[str] = ("run_id", "metric")
) -> pd.DataFrame:
    """Trailing moving average of ``value`` over ``window`` steps within each run and metric."""
    steps = steps.sort_values([*by, "step"]).copy()
    if window > 1:
        rolling = steps.groupby(list(by), sort=False)[value].rolling(window, min_periods=1).mean()
        steps[value] = rolling.reset_index(level=list(range(len(by))), drop=True)
    return steps


def weight_curves(
    runs: Runs, families: Sequence[str] = ("sft", "cl"), counterfactual: bool = True
) -> pd.DataFrame:
    """Long table of mean weights per step, for the runs whose weight is one of ``families``.

    Columns: run_id, step, side ("positives" W+ / "negatives" W-), weight (the family),
    computed_in ("its own training": the logged W that trained; "the other's training": the
    same family's weight computed from the scores of a run trained with another weight),
    trained_with, seed, value.
    """
    if "weight.name" not in runs.config:
        return pd.DataFrame()
    runs = objective_runs(runs, families)
    trained = runs.config
    parts = []
    for side, suffix in (("positives", "pos"), ("negatives", "neg")):
        for family in families:
            own = trained[trained["weight.name"] == family]["run_id"]
            logged = runs.history[
                runs.history["run_id"].isin(own) & (runs.history["metric"] == f"w_{suffix}_mean")
            ]
            parts.append(logged.assign(side=side, weight=family, computed_in="its own training"))
            if counterfactual:
                others = trained[trained["weight.name"] != family]["run_id"]
                cf = runs.history[
                    runs.history["run_id"].isin(others)
                    & (runs.history["metric"] == f"w_{family}_{suffix}")
                ]
                parts.append(
                    cf.assign(side=side, weight=family, computed_in="the other's training")
                )
    curves = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if curves.empty:
        return curves
    columns = runs.config[["run_id", "weight.name", *(["seed"] if "seed" in runs.config else [])]]
    return curves.merge(columns.rename(columns={"weight.name": "trained_with"}), on="run_id")


def objective_runs(runs: Runs, families: Sequence[str] = ("sft", "cl")) -> Runs:
    """The finished runs of Figure 3's findings: URL with a family's own (weight, direction)
    pair (URL(sft,cl) is neither SFT nor CL; a native loss is Figure 2's), of one setup
    (runs that differ in more, e.g. the negatives per query, are an AnalysisError, a
    ValueError, naming the key)."""
    runs = runs.complete()
    config = runs.config
    if "weight.name" not in config:
        return runs.subset([])
    keep = config["weight.name"].isin(families)
    if "direction.name" in config:
        keep &= config["direction.name"].isna() | (config["direction.name"] == config["weight.name"])
    if "loss" in config:
        keep &= config["loss"].isna() | (config["loss"] == "url")
    runs = runs.subset(config.loc[keep, "run_id"])
    require_one_setup(runs.config, ["objective"])
    return runs


def weight_summary(
    runs: Runs, families: Sequence[str] = ("sft", "cl"), counterfactual: bool = True
) -> pd.DataFrame:
    """Mean weights over all steps and over the last quarter of training, per curve of Figure 3:
    each run's mean over its steps, then the mean over runs (every run counts once)."""
    curves = weight_curves(runs, families, counterfactual)
    if curves.empty:
        return pd.DataFrame(
            columns=["side", "weight", "computed_in", "all steps", "last quarter", "runs"]
        )
    keys = ["side", "weight", "computed_in"]
    late = curves["step"] > 0.75 * curves.groupby("run_id")["step"].transform("max")

    def over_runs(rows: pd.DataFrame) -> pd.Series:
        return rows.groupby([*keys, "run_id"])["value"].mean().groupby(keys).mean()

    return pd.concat(
        [
            over_runs(curves).rename("all steps"),
            over_runs(curves[late]).rename("last quarter"),
            curves.groupby(keys)["run_id"].nunique().rename("runs"),
        ],
        axis=1,
    ).reset_index()


def weight_evolution(
    runs: Runs,
    smoothing: int = 10,
    families: Sequence[str] = ("sft", "cl"),
    counterfactual: bool = True,
) -> plt.Figure:
    """Figure 3: average W+ and W- over training steps, per weight family."""
    if not len(runs):
        raise ValueError("no run selected")
    curves = weight_curves(runs, families, counterfactual)
    if curves.empty:
        raise ValueError(
            f"no selected run trained with a weight in {list(families)} (weight.name); "
            f"they trained with {sorted(runs.config.get('weight.name', pd.Series()).dropna().unique())}"
        )
    curves = smooth(curves, smoothing, by=("run_id", "side", "weight", "computed_in"))
    curves["weight"] = curves["weight"].map(lambda f: FAMILY_LABEL.get(f, f))
    curves = curves.rename(columns={"weight": "weight family", "computed_in": "computed along"})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, side in zip(axes, ("positives", "negatives"), strict=True):
        sns.lineplot(
            data=curves[curves["side"] == side], x="step", y="value", errorbar="sd", ax=ax,
            hue="weight family", hue_order=[FAMILY_LABEL.get(f, f) for f in families],
            style="computed along", style_order=["its own training", "the other's training"],
        )  # fmt: skip
        sign = "+" if side == "positives" else "-"
        ax.set(
            xlabel="optimizer step",
            ylabel=f"mean $W^{sign}$ (per {side[:-1]})",
            title=f"{side}: $W^{sign}$",
        )
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Average weights over training (moving average of {smoothing} steps, band: $\\pm$1 sd over seeds)"
    )
    fig.tight_layout()
    return fig


def native_losses(runs: Runs, smoothing: int = 10) -> plt.Figure:
    """Figure 2: the native SFT loss along URL(sft, sft) and along the native SFT loss's own
    training, and the native InfoNCE loss along URL(cl, cl) and native InfoNCE (band: +- sd
    over seeds). With one seed's data order the curves of a pair should lie on each other."""
    if "objective" not in runs.config or not len(runs):
        raise ValueError("no run selected (or none with weight.name and direction.name)")
    runs = runs.complete()
    require_one_setup(runs.config, ["objective"])
    panels = (
        (("sft", "native_sft"), "loss_sft_native", "native SFT loss"),
        (("cl", "native_infonce"), "loss_infonce_native", "native InfoNCE loss"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    drawn = 0
    for ax, (objectives, metric, label) in zip(axes, panels, strict=True):
        steps = runs.select(objective=list(objectives)).steps(metric)
        if steps.empty:
            ax.set_title(f"{label}: no URL({objectives[0]}, {objectives[0]}) or {objectives[1]} runs")
            continue
        drawn += 1
        steps = smooth(steps, smoothing)
        steps["trained with"] = steps["objective"].map(
            lambda o: f"URL({o}, {o})" if o in ("sft", "cl") else o
        )
        sns.lineplot(data=steps, x="step", y="value", hue="trained with", style="trained with",
                     errorbar="sd", ax=ax)  # fmt: skip
        ax.set(xlabel="optimizer step", ylabel=f"{label} (nats)", title=f"{label}: URL vs native")
    if not drawn:
        plt.close(fig)
        raise ValueError("no selected run trained URL(sft,sft), URL(cl,cl) or a native loss")
    fig.suptitle(f"Native losses along training (moving average of {smoothing} steps)")
    fig.tight_layout()
    return fig


def step_curves(
    runs: Runs,
    column: str,
    by: str = "objective",
    smoothing: int = 1,
    per_run: bool = True,
    level: float = 0.95,
) -> plt.Figure:
    """Any logged per-step column: each run (thin) and, per ``by`` group, the mean over its
    runs (seeds) with a ``level`` t-interval of that mean at each step (a band where >= 2 runs).
    """
    from scipy import stats

    steps = runs.steps(column)  # unfinished runs too: the explorer follows a run as it trains
    if steps.empty:
        known = sorted(runs.history["metric"].unique()) if len(runs.history) else []
        raise ValueError(
            f"no run selected logs {column!r}" + (f" (logged: {', '.join(known)})" if known else "")
        )
    steps = smooth(steps, smoothing)
    steps[by] = steps[by].astype(str) if by in steps else "all runs"
    fig, ax = plt.subplots(figsize=(8, 4.2))
    palette = dict(
        zip(
            sorted(steps[by].unique()), sns.color_palette(n_colors=steps[by].nunique()), strict=True
        )
    )
    for group, rows in steps.groupby(by):
        color = palette[group]
        if per_run:
            for _, run in rows.groupby("run_id"):
                ax.plot(run["step"], run["value"], color=color, alpha=0.3, linewidth=0.8)
        at = rows.groupby("step")["value"].agg(["mean", "std", "count"])
        ax.plot(at.index, at["mean"], color=color, linewidth=2,
                label=f"{by}={group} ({rows['run_id'].nunique()} runs)")  # fmt: skip
        several = at["count"] >= 2
        if several.any():
            t = stats.t.ppf(0.5 + level / 2, at.loc[several, "count"] - 1)
            half = t * at.loc[several, "std"] / at.loc[several, "count"] ** 0.5
            ax.fill_between(at.index[several], at.loc[several, "mean"] - half,
                            at.loc[several, "mean"] + half, color=color, alpha=0.2)  # fmt: skip
    ax.set(xlabel="optimizer step", ylabel=column,
           title=f"{column}: runs (thin), mean over seeds +- {level:.0%} interval"
           + (f", moving average of {smoothing}" if smoothing > 1 else ""))  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_by(
    runs: Runs,
    x: str,
    metric: str = "test/ndcg@10",
    hue: str | None = "objective",
    xlabel: str | None = None,
    log2_x: bool = True,
    scale: float = 100.0,
) -> plt.Figure:
    """A final metric against a setting (negatives per query, token set size), mean +- sd over seeds."""
    table = seed_finals(runs, [metric], [x, hue]).dropna(subset=[metric])
    if table.empty or x not in table:
        raise ValueError(f"no finished runs with {metric!r} and a {x!r} column")
    table = table.assign(**{metric: table[metric] * scale})
    if hue and hue in table:
        table[hue] = table[hue].map(lambda v: OBJECTIVE_LABEL.get(v, v))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(
        data=table,
        x=x,
        y=metric,
        hue=hue if hue in table else None,
        marker="o",
        errorbar="sd",
        ax=ax,
    )
    if log2_x:
        _log2_ticks(ax, table[x])
    ax.set(xlabel=xlabel or x, ylabel=f"{metric} (x{scale:g})")
    fig.tight_layout()
    return fig


def metric_grid(
    runs: Runs, x: str, metrics: Sequence[str], hue: str = "objective", xlabel: str | None = None
) -> plt.Figure:
    """Several final metrics against one setting, one panel each."""
    table = seed_finals(runs, list(metrics), [x, hue])
    long = table.melt(
        id_vars=[c for c in ("seed", x, hue) if c in table],
        value_vars=list(metrics),
        var_name="metric",
    )
    long = long.dropna(subset=["value"]).assign(value=lambda t: t["value"] * 100)
    if long.empty:
        raise ValueError(f"no finished runs with any of {list(metrics)}")
    long[hue] = long[hue].map(lambda v: OBJECTIVE_LABEL.get(v, v))
    grid = sns.relplot(
        data=long, x=x, y="value", hue=hue, col="metric", col_wrap=min(3, len(metrics)), kind="line",
        marker="o", errorbar="sd", height=3, facet_kws={"sharey": False},
    )  # fmt: skip
    for ax in grid.axes.flat:
        _log2_ticks(ax, long[x])
    grid.set_axis_labels(xlabel or x, "metric (x100)")
    grid.set_titles("{col_name}")
    return grid.figure


def seed_finals(runs: Runs, metrics: Sequence[str], keys: Sequence[str | None]) -> pd.DataFrame:
    """Final ``metrics`` per setting (``keys``) and seed, as the tables count them
    (:func:`urlkit.analysis.tables.seed_summary`): finished runs only (a failed run may have
    written its metrics before it failed), the runs of one seed averaged (a seed run twice
    is one point, not two)."""
    table = runs.complete().final(list(metrics))
    keys = [k for k in dict.fromkeys(keys) if k and k in table]
    table = table.assign(seed=seed_labels(table))
    return table.groupby([*keys, "seed"], dropna=False, sort=False)[list(metrics)].mean().reset_index()


def probing_deltas(
    tables: dict[str, pd.DataFrame], titles: dict[str, str] | None = None
) -> plt.Figure:
    """Per probing table, each row's delta to the table's first row: urlkit beside the paper."""
    names = [n for n, t in tables.items() if len(t) > 1]
    if not names:
        raise ValueError("no probing table with more than one row")
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        table = tables[name]
        keys = [
            c
            for c in table.columns
            if c not in ("n", "mean", "std", "paper", "difference", "delta", "paper_delta")
        ]
        rows = table.assign(setting=table[keys].astype(str).agg(" ".join, axis=1))
        long = rows.melt(
            id_vars="setting",
            value_vars=["delta", "paper_delta"],
            var_name="source",
            value_name="points",
        )
        long["source"] = long["source"].map({"delta": "urlkit", "paper_delta": "paper"})
        sns.barplot(
            data=long, x="setting", y="points", hue="source", hue_order=["paper", "urlkit"], ax=ax
        )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(
            xlabel="",
            ylabel="delta to the first row (points)",
            title=(titles or {}).get(name, name),
        )
        ax.title.set_fontsize(10)
        ax.tick_params(axis="x", rotation=35, labelsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _log2_ticks(ax, values: pd.Series) -> None:
    """A log2 x axis ticked at the values run (1, 2, 4, 8, 16), labelled as plain numbers."""
    ticks = sorted(pd.unique(values.dropna()))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, dpi: int = 150) -> list[Path]:
    """``<name>.png`` and ``<name>.pdf`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths
