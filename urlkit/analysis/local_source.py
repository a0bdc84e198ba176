"""Local run directories as :class:`~urlkit.analysis.runset.Runs` (see urlkit/records.py).

A run directory holds ``config.yaml`` and ``history.csv``; ``run.json``, ``metrics.json``,
``eval.csv`` and ``per_query/<dataset>_<split>_reranker.csv`` (the final evaluation, one row
per query; ``<split>`` is the run's ``data.test_split``: ``dev`` when settings were chosen on
dev, docs/studies.md) are read when present, and ``experiments.txt``: the experiments a
study shared the run with (one a line, besides its config's ``experiment_name``: the run is
a grid point of each; urlkit/study/plan.py writes it), the run's ``experiments`` column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from urlkit.analysis.runset import (
    EVAL_COLUMNS,
    EVAL_KEYS,
    HISTORY_COLUMNS,
    PER_QUERY_COLUMNS,
    AnalysisError,
    Runs,
    add_derived_columns,
    concat,
    flatten,
)
from urlkit.errors import ConfigError
from urlkit.records import served_experiments


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

    evals, tested = pd.DataFrame(columns=EVAL_COLUMNS), None
    if (path / "eval.csv").exists():
        wide = _read_csv(path / "eval.csv", dtype={"dataset": str, "split": str})  # a dataset "007" is no 7
        missing = [k for k in EVAL_KEYS if k not in wide]
        if missing:
            raise AnalysisError(f"{path / 'eval.csv'}: missing columns {missing}")
        if len(wide):
            evals = wide.melt(id_vars=list(EVAL_KEYS), var_name="metric", value_name="value")
            evals.insert(0, "run_id", run_id)
        # the dataset the final evaluation scored (metrics.json's test/*): benchmark=<suite>
        # writes the suite's datasets' per-query files beside its file
        tested = set(wide.loc[wide["split"] == "test:reranker", "dataset"].astype(str)) or None

    row = {
        "run_id": run_id,
        "name": path.name,
        "path": str(path),
        "status": info.get("status", "unknown"),
        "steps": int(history["step"].max()) if len(history) else 0,
        **flatten(config),
    }
    # every experiment the run is a grid point of: its own, then those a study shared it with
    own = [str(config["experiment_name"])] if config.get("experiment_name") is not None else []
    try:
        served = served_experiments(path)
    except ConfigError as err:
        raise AnalysisError(str(err)) from err
    row["experiments"] = tuple(dict.fromkeys([*own, *served]))
    if info.get("model_dtype"):  # what model.dtype=auto chose on the machine that trained
        row["model_dtype"] = str(info["model_dtype"])
    return Runs(
        config=pd.DataFrame([row]),
        history=long_history[HISTORY_COLUMNS],
        evals=evals[EVAL_COLUMNS],
        metrics=pd.DataFrame([{"run_id": run_id, **metrics}]),
        source=str(path),
        per_query=read_per_query(path, run_id, str((config.get("data") or {}).get("test_split") or "test"),
                                 datasets=tested),
    )  # fmt: skip


def read_per_query(
    path: Path, run_id: str, split: str = "test", model: str = "reranker", datasets: set[str] | None = None
) -> pd.DataFrame:
    """``model``'s per-query metrics of a run directory's final evaluation, long (the trained
    reranker, or the first stage scored beside it: ``bm25``).

    ``split``: the split that evaluation scored (the run's ``data.test_split``). Only its files
    are read: a run that scored dev to choose settings never mixes in a suite's test files.
    ``datasets``: the datasets of the final evaluation (eval.csv's ``test:reranker`` rows), so
    the per-query values are those its final metrics average; the files of a benchmark suite
    run after it (``benchmark=<suite>``) are not pooled in. None: every dataset's file.
    Query ids are prefixed with the dataset name when several files are read.
    """
    suffix = f"_{split}_{model}.csv"
    files = sorted((path / "per_query").glob(f"*{suffix}"))
    if datasets is not None:
        files = [file for file in files if file.name[: -len(suffix)] in datasets]
    parts = []
    for file in files:
        try:
            wide = pd.read_csv(file, dtype={"query_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise AnalysisError(f"{file}: malformed per-query CSV: {err}") from err
        if "query_id" not in wide:
            raise AnalysisError(f"{file}: no 'query_id' column (columns: {list(wide.columns)})")
        if len(files) > 1:
            dataset = file.name[: -len(suffix)]
            wide["query_id"] = dataset + "/" + wide["query_id"]
        parts.append(wide.melt(id_vars="query_id", var_name="metric", value_name="value"))
    if not parts:
        return pd.DataFrame(columns=PER_QUERY_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "run_id", run_id)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    return table[PER_QUERY_COLUMNS]


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


def _read_csv(path: Path, dtype: dict | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["step"])
    except pd.errors.ParserError as err:
        raise AnalysisError(f"{path}: malformed CSV: {err}") from err
