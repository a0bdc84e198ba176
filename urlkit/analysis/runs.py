"""Runs as tidy tables: the one place that picks where runs are read from.

``load_runs(source)`` returns :class:`Runs`, five pandas tables keyed by ``run_id``:

    config    one row per run: run_id, name, path, status, steps, model_dtype (run.json: the
              dtype model.dtype=auto chose, local runs), experiment_name, experiments
              (every experiment the run is a grid point of: its own and those a study
              shared it with, experiments.txt; Runs.of_experiments), objective,
              loss, and the resolved config flattened to dotted columns (weight.name,
              direction.name, weight.tau, weight.dtype, head.trainable, head.num_tokens,
              data.n_negatives, seed, ...)
    history   long: run_id, step, metric, value    (one row per optimizer step and logged scalar:
              loss, w_pos_mean, w_cl_pos, loss_sft_native, ...; see urlkit/training/telemetry.py)
    evals     long: run_id, step, split, dataset, metric, value   (dev during training, test at the end)
    metrics   one row per run: run_id + final metrics (test/ndcg@10, bm25/test/ndcg@10, ...)
    per_query long: run_id, query_id, metric, value   (final test metrics per query; local runs)

``objective`` names what trained: ``sft`` and ``cl`` for URL with a native (weight, direction)
pair, ``<weight>/<direction>`` otherwise (``sft/cl``: the sft weight with the cl direction),
``native_sft`` / ``native_infonce`` for the native losses (``loss`` column).

A source is a folder searched recursively for run directories (a directory holding
``config.yaml`` and ``history.csv``; see urlkit/records.py), a list of such folders, or
W&B: ``wandb:<entity>/<project>`` or ``wandb-sweep:<entity>/<project>/<sweep id>``.
Notebooks and findings read runs only through this module. The tables live in
urlkit/analysis/runset.py, the readers in local_source.py and wandb_source.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from urlkit.analysis.local_source import find_run_dirs, load_local, read_run_dir
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
    objective_of,
)
from urlkit.analysis.wandb_source import load_wandb

__all__ = [
    "EVAL_COLUMNS",
    "EVAL_KEYS",
    "HISTORY_COLUMNS",
    "PER_QUERY_COLUMNS",
    "AnalysisError",
    "Runs",
    "add_derived_columns",
    "concat",
    "find_run_dirs",
    "flatten",
    "load_local",
    "load_runs",
    "load_wandb",
    "objective_of",
    "read_run_dir",
]


def load_runs(source: str | Path | Sequence[str | Path], api: Any = None) -> Runs:
    """Runs from local folders or W&B (``api``: a ``wandb.Api`` instance, default a new one)."""
    if isinstance(source, (str, Path)) and str(source).startswith(("wandb:", "wandb-sweep:")):
        return load_wandb(str(source), api=api)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    return load_local(sources)
