"""Runs as tidy tables: the one place that reads run directories (or W&B) for analysis.

``load_runs(source)`` returns :class:`Runs`, four pandas tables keyed by ``run_id``:

    config    one row per run: run_id, name, path, status, steps, experiment_name, objective,
              and the resolved config flattened to dotted columns (weight.name, direction.name,
              weight.tau, weight.dtype, head.trainable, head.num_tokens, data.n_negatives, seed, ...)
    history   long: run_id, step, metric, value    (one row per optimizer step and logged scalar:
              loss, w_pos_mean, w_cl_pos, loss_sft_native, ...; see urlkit/training/telemetry.py)
    evals     long: run_id, step, split, dataset, metric, value   (dev during training, test at the end)
    metrics   one row per run: run_id + final metrics (test/ndcg@10, bm25/test/ndcg@10, ...)

``objective`` names the (weight, direction) pair: ``sft`` and ``cl`` for the native objectives,
``<weight>/<direction>`` otherwise (``sft/cl``: the sft weight with the cl direction).

A source is a folder searched recursively for run directories (a directory holding
``config.yaml`` and ``history.csv``; see urlkit/records.py), a list of such folders, or
W&B: ``wandb:<entity>/<project>`` or ``wandb-sweep:<entity>/<project>/<sweep id>``.
Notebooks and findings read runs only through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

HISTORY_COLUMNS = ["run_id", "step", "metric", "value"]
EVAL_COLUMNS = ["run_id", "step", "split", "dataset", "metric", "value"]
EVAL_KEYS = ("step", "split", "dataset")


class AnalysisError(ValueError):
    """A run source that cannot be read: names the file (and line) or the W&B path."""


@dataclass
class Runs:
    """Tidy tables of a set of runs; every table has a ``run_id`` column."""

    config: pd.DataFrame
    history: pd.DataFrame
    evals: pd.DataFrame
    metrics: pd.DataFrame
    source: str = ""

    def __len__(self) -> int:
        return len(self.config)

    def __repr__(self) -> str:
        return f"Runs({len(self)} runs from {self.source or 'memory'})"

    @property
    def ids(self) -> list[str]:
        return list(self.config["run_id"])

    def select(self, where: Mapping[str, Any] | None = None, **equals: Any) -> Runs:
        """The runs whose config matches: ``runs.select({"weight.name": "sft"}, seed=0)``.

        A list or tuple value matches any of its items; a column no run has matches nothing.
        """
        conditions = {**(where or {}), **equals}
        keep = pd.Series(True, index=self.config.index)
        for column, wanted in conditions.items():
            if column not in self.config:
                keep &= False
                continue
            values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
            keep &= self.config[column].isin(values)
        return self.subset(self.config.loc[keep, "run_id"])

    def subset(self, run_ids: Iterable[str]) -> Runs:
        ids = set(run_ids)
        return Runs(
            config=self.config[self.config["run_id"].isin(ids)].reset_index(drop=True),
            history=self.history[self.history["run_id"].isin(ids)].reset_index(drop=True),
            evals=self.evals[self.evals["run_id"].isin(ids)].reset_index(drop=True),
            metrics=self.metrics[self.metrics["run_id"].isin(ids)].reset_index(drop=True),
            source=self.source,
        )

    def final(self, metrics: str | Sequence[str] = "test/ndcg@10") -> pd.DataFrame:
        """The config table with final metric columns joined (NaN for runs without them)."""
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        table = self.config.merge(self.metrics, on="run_id", how="left")
        for name in names:
            if name not in table:
                table[name] = float("nan")
        return table

    def steps(self, metrics: str | Sequence[str]) -> pd.DataFrame:
        """Long history of some metrics joined with the config (for plots over training)."""
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        rows = self.history[self.history["metric"].isin(names)]
        return rows.merge(self.config, on="run_id", how="left")


def concat(parts: Sequence[Runs], source: str = "") -> Runs:
    """Several Runs as one; a run id seen twice is an error (a copied run would count twice)."""
    config = pd.concat([p.config for p in parts], ignore_index=True)
    duplicated = config[config["run_id"].duplicated(keep=False)]
    if len(duplicated):
        paths = ", ".join(duplicated["path"].astype(str))
        raise AnalysisError(f"the same run id appears more than once: {paths}")
    return Runs(
        config=config,
        history=pd.concat([p.history for p in parts], ignore_index=True),
        evals=pd.concat([p.evals for p in parts], ignore_index=True),
        metrics=pd.concat([p.metrics for p in parts], ignore_index=True),
        source=source,
    )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys; lists become tuples (hashable, so group-able)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = tuple(value)
        else:
            flat[name] = value
    return flat


def objective_of(weight: Any, direction: Any) -> Any:
    """``sft``/``cl`` for a native pair, ``<weight>/<direction>`` otherwise."""
    if pd.isna(weight) or pd.isna(direction):
        return float("nan")
    return weight if weight == direction else f"{weight}/{direction}"


def add_derived_columns(config: pd.DataFrame) -> pd.DataFrame:
    if "experiment_name" not in config:
        config["experiment_name"] = float("nan")
    if {"weight.name", "direction.name"} <= set(config.columns):
        config["objective"] = [
            objective_of(w, d)
            for w, d in zip(config["weight.name"], config["direction.name"], strict=True)
        ]
    return config


# -- local run directories ---------------------------------------------------------------


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (or ``root`` itself), sorted; never descends into one."""
    root = Path(root)
    if not root.exists():
        raise AnalysisError(f"{root}: no such folder of runs")
    found = []
    for here, dirs, files in os.walk(root):
        if "config.yaml" in files and "history.csv" in files:
            found.append(Path(here))
            dirs.clear()  # a run directory holds checkpoints and wandb files, not runs
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def read_run_dir(path: Path) -> Runs:
    """One run directory as Runs (one row of config)."""
    config = _read_yaml(path / "config.yaml")
    info = _read_json(path / "run.json")
    metrics = _read_json(path / "metrics.json")
    history = _read_csv(path / "history.csv")
    run_id = str(info.get("run_id") or path.name)

    if "step" not in history:
        raise AnalysisError(
            f"{path / 'history.csv'}: no 'step' column (columns: {list(history.columns)})"
        )
    long_history = history.melt(id_vars="step", var_name="metric", value_name="value")
    long_history.insert(0, "run_id", run_id)
    long_history["value"] = pd.to_numeric(long_history["value"], errors="coerce")
    long_history = long_history.dropna(subset=["value"])

    evals = pd.DataFrame(columns=EVAL_COLUMNS)
    if (path / "eval.csv").exists():
        wide = _read_csv(path / "eval.csv")
        missing = [k for k in EVAL_KEYS if k not in wide]
        if missing:
            raise AnalysisError(f"{path / 'eval.csv'}: missing columns {missing}")
        if len(wide):
            evals = wide.melt(id_vars=list(EVAL_KEYS), var_name="metric", value_name="value")
            evals.insert(0, "run_id", run_id)

    row = {
        "run_id": run_id,
        "name": path.name,
        "path": str(path),
        "status": info.get("status", "unknown"),
        "steps": int(history["step"].max()) if len(history) else 0,
        **flatten(config),
    }
    return Runs(
        config=pd.DataFrame([row]),
        history=long_history[HISTORY_COLUMNS],
        evals=evals[EVAL_COLUMNS],
        metrics=pd.DataFrame([{"run_id": run_id, **metrics}]),
        source=str(path),
    )


def load_local(sources: Sequence[str | Path]) -> Runs:
    dirs = [d for source in sources for d in find_run_dirs(source)]
    label = ", ".join(str(s) for s in sources)
    if not dirs:
        raise AnalysisError(
            f"no run directories under {label} "
            "(a run directory holds config.yaml and history.csv; see urlkit/records.py)"
        )
    runs = concat([read_run_dir(d) for d in dirs], source=label)
    runs.config = add_derived_columns(runs.config)
    return runs


def load_runs(source: str | Path | Sequence[str | Path], api: Any = None) -> Runs:
    """Runs from local folders or W&B (``api``: a ``wandb.Api`` instance, default a new one)."""
    if isinstance(source, (str, Path)) and str(source).startswith(("wandb:", "wandb-sweep:")):
        from urlkit.analysis.wandb_source import load_wandb

        return load_wandb(str(source), api=api)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    return load_local(sources)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise AnalysisError(f"{path}{where}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise AnalysisError(f"{path}: expected a mapping (the resolved run config)")
    return data


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AnalysisError(f"{path} line {err.lineno}: not valid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise AnalysisError(f"{path}: expected a JSON object")
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["step"])
    except pd.errors.ParserError as err:
        raise AnalysisError(f"{path}: malformed CSV: {err}") from err
