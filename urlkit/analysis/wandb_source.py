"""Runs from Weights & Biases, as the same tidy tables as local run directories.

    wandb:<entity>/<project>                    every run of a project
    wandb-sweep:<entity>/<project>/<sweep id>   the runs of one sweep

Uses the public API (``wandb.Api``): ``run.config`` (flattened to dotted columns),
``run.summary`` (final metrics: the keys holding ``test/``, as in metrics.json) and the FULL
history through ``run.scan_history()`` (``run.history()`` samples 500 rows, which would
silently thin a weight curve). Logged keys map back to history.csv / eval.csv names:

    train/<metric>  -> history <metric>           (step: trainer/global_step, else _step)
    dev/<metric>    -> evals split "dev"
    [<model>/]test/<metric> in the summary -> metrics, and evals split "test:<model>"

A step logged twice (a resumed run replays the steps after its last checkpoint) counts once,
with the later value, as in history.csv.

W&B stores nested config as is, but a sweep parameter locks its key: with ``weight=cl`` swept
the run's config holds ``weight: "cl"`` (the choice) and no ``weight.name``. Such a column
is kept as the choice. A locked value is the sweep file's as ``wandb sweep`` read it, with
YAML 1.1, to which ``1e-3`` (no dot) is a string: ``weight.tau: "1e-3"``, where the run (Hydra)
and its run directory hold the number 0.001. Such a string is read back as that number.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from urlkit.analysis.runset import (
    EVAL_COLUMNS,
    HISTORY_COLUMNS,
    AnalysisError,
    Runs,
    add_derived_columns,
    concat,
    flatten,
)

STEP_KEYS = ("trainer/global_step", "_step")
# a number in exponent form without a dot: a float to Hydra and YAML 1.2, a string to YAML 1.1
EXPONENT_ONLY = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def parse_source(source: str) -> tuple[str, str]:
    """``"wandb:ent/proj"`` -> ``("project", "ent/proj")``; sweeps -> ``("sweep", "ent/proj/id")``."""
    kind, _, path = source.partition(":")
    parts = [p for p in path.split("/") if p]
    if kind == "wandb" and len(parts) == 2:
        return "project", "/".join(parts)
    if kind == "wandb-sweep" and len(parts) == 3:
        return "sweep", "/".join(parts)
    raise AnalysisError(
        f"{source!r}: expected wandb:<entity>/<project> or wandb-sweep:<entity>/<project>/<sweep id>"
    )


def load_wandb(source: str, api: Any = None) -> Runs:
    kind, path = parse_source(source)
    if api is None:
        import wandb

        api = wandb.Api()
    try:
        runs = list(api.sweep(path).runs if kind == "sweep" else api.runs(path))
    except Exception as err:  # the API raises requests/GraphQL errors of many kinds
        raise AnalysisError(f"{source}: W&B could not list the runs: {err}") from err
    if not runs:
        raise AnalysisError(f"{source}: no runs")
    loaded = concat([read_wandb_run(run, source) for run in runs], source=source)
    loaded.config = add_derived_columns(loaded.config)
    return loaded


def read_wandb_run(run: Any, source: str) -> Runs:
    run_id = str(run.id)
    config = {k: _sweep_value(v) for k, v in dict(run.config).items() if not str(k).startswith("_")}
    summary = dict(run.summary.items()) if hasattr(run.summary, "items") else dict(run.summary)
    metrics = {k: float(v) for k, v in summary.items() if "test/" in str(k) and _is_number(v)}

    history_rows, eval_rows, last_step = [], [], 0
    for row in run.scan_history():
        step = next((row[k] for k in STEP_KEYS if _is_number(row.get(k))), None)
        if step is None:
            continue
        step = int(step)
        last_step = max(last_step, step)
        for key, value in row.items():
            if not _is_number(value):
                continue  # histograms, media, None of keys not logged at this step
            if key.startswith("train/"):
                history_rows.append((run_id, step, key[len("train/") :], float(value)))
            elif key.startswith("dev/"):
                eval_rows.append(
                    (run_id, step, "dev", _dataset(config), key[len("dev/") :], float(value))
                )

    for key, value in metrics.items():
        model, _, metric = key.rpartition("test/")
        split = f"test:{model.rstrip('/') or 'reranker'}"
        eval_rows.append((run_id, last_step, split, _dataset(config), metric, value))

    # a resumed run logs again, under the same run id, the steps its killed attempt logged after
    # the last checkpoint (docs/reliability.md): each step counts once, as in history.csv, with
    # the value of the attempt that went on (scan_history gives the rows in logging order)
    history = pd.DataFrame(history_rows, columns=HISTORY_COLUMNS)
    history = history.drop_duplicates(["step", "metric"], keep="last").reset_index(drop=True)
    evals = pd.DataFrame(eval_rows, columns=EVAL_COLUMNS)
    evals = evals.drop_duplicates(["step", "split", "metric"], keep="last").reset_index(drop=True)
    row = {
        "run_id": run_id,
        "name": getattr(run, "name", run_id),
        "path": getattr(run, "url", None) or f"{source}/{run_id}",
        "status": getattr(run, "state", "unknown"),
        "steps": int(history["step"].max()) if len(history) else 0,
        **flatten(config),
    }
    return Runs(
        config=pd.DataFrame([row]),
        history=history,
        evals=evals,
        metrics=pd.DataFrame([{"run_id": run_id, **metrics}]),
        source=source,
    )


def _sweep_value(value: Any) -> Any:
    """A sweep-locked ``"1e-3"`` as the float the run trained with (module docstring)."""
    if isinstance(value, str) and EXPONENT_ONLY.fullmatch(value.strip()):
        return float(value)
    return value


def _dataset(config: dict) -> str:
    data = config.get("data")
    if isinstance(data, dict):
        return str(data.get("name", ""))
    return str(config.get("data.name", data or ""))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
