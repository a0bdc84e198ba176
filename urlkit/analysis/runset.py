"""The tidy tables of a set of runs (:class:`Runs`) and what every source shares.

Sources (urlkit/analysis/local_source.py, urlkit/analysis/wandb_source.py) build these
tables; urlkit/analysis/runs.py picks the source. This module imports no source, so the
sources and the dispatcher import it without a loop.

    config     one row per run (see urlkit/analysis/runs.py for the columns)
    history    long: run_id, step, metric, value
    evals      long: run_id, step, split, dataset, metric, value
    metrics    one row per run: run_id + final metrics
    per_query  long: run_id, query_id, metric, value   (the final test evaluation of the
               trained reranker, per query; empty for sources that do not keep it, e.g. W&B)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

HISTORY_COLUMNS = ["run_id", "step", "metric", "value"]
PER_QUERY_COLUMNS = ["run_id", "query_id", "metric", "value"]
EVAL_COLUMNS = ["run_id", "step", "split", "dataset", "metric", "value"]
EVAL_KEYS = ("step", "split", "dataset")
# a run's status when its final numbers are there to compare ("unknown": no run.json says)
COMPLETE_STATUSES = ("finished", "unknown")


# columns that say how a run was launched, logged or recorded, not what it computed: runs that
# differ only in these are one setup (a key ending in "." covers its group)
BOOKKEEPING = (
    "run_id", "name", "path", "status", "steps", "seed", "experiment_name", "experiments", "objective", "run_name",
    "output_root", "resume", "logger.", "log.", "checkpoint.", "profile.", "hydra.",
    "trainer.enable_progress_bar", "trainer.devices", "trainer.num_nodes", "trainer.accelerator",
    "trainer.strategy", "eval.every_n_steps", "eval.dev_queries", "eval.batch_size", "eval.merge_lora",
    # the same gradient, computed another way (tests/training: equal to float tolerance)
    "train.chunk_size", "train.gradient_checkpointing", "train.nonfinite", "train.max_consecutive_skips",
)  # fmt: skip
# Hydra overrides that name a config file, not a key: a W&B sweep locks them into a run's config
SWEEP_CHOICES = ("experiment",)
# compared even where a run does not record them: a run without one is another setup. Other
# keys are compared among the runs that record them (a key newer than a run is not a difference)
CORE_SETUP = ("data.name", "data.path", "data.test_split", "model.name", "train.max_steps", "train.lr",
              "eval.test_queries", "eval.depth")  # fmt: skip
# a key an analysis varies frees the keys that follow from it (objective: weight, direction, loss)
IMPLIED = {"objective": ("weight", "direction", "loss"), "head.num_tokens": ("head.tokens",)}
NOT_RECORDED = "(not recorded)"


def setup_differences(config: pd.DataFrame, varied: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """The config keys in which ``config``'s runs differ, beyond what ``varied`` explains and
    bookkeeping: key -> {value: number of runs}. Empty: one setup, its runs comparable.

    A varied ``<group>.name`` (a config group's choice, ``weight.name``) frees the whole group
    (``weight.temperature`` comes with the cl weight), ``objective`` frees weight, direction and
    loss; every other key a comparison does not vary must be equal in all its runs: the
    number of negatives, the weight's temperature, LoRA's rank, the head's tokens, ...
    """
    freed: list[str] = []
    for key in varied:
        freed.append(key)
        if key.endswith(".name"):
            freed.append(key.rsplit(".", 1)[0])
        freed.extend(IMPLIED.get(key, ()))
    if "model_dtype" in config and config["model_dtype"].notna().all():
        # "auto" was bfloat16 on one machine, float32 on another: where every run recorded the
        # dtype it trained in (run.json), that is compared instead of the setting
        freed.append("model.dtype")
    freed_prefixes = tuple(f"{k}." for k in freed)

    def compared(key: str) -> bool:
        if key in freed or key.startswith(freed_prefixes):
            return False
        # a W&B sweep keeps its parameters as config keys beside the logged config, Hydra
        # overrides among them (experiment=figure2_native, +objective=native_sft): what they
        # chose is in the resolved keys (experiment_name, weight.name, loss), compared themselves
        if key.startswith(("+", "~")) or key in SWEEP_CHOICES:
            return False
        return not any(key == b or (b.endswith(".") and key.startswith(b)) for b in BOOKKEEPING)

    differences: dict[str, dict[str, int]] = {}
    for key in filter(compared, config.columns):
        column = config[key].astype(object)
        if key not in CORE_SETUP:
            column = column[column.notna()]
        values = column.where(column.notna(), NOT_RECORDED).map(str)
        if values.nunique() > 1:
            differences[key] = values.value_counts().to_dict()
    return differences


def describe_differences(differences: Mapping[str, Mapping[str, int]], limit: int = 3) -> str:
    """``the runs differ in data.n_negatives (4: 3 runs, 16: 1 runs); also in ...``."""
    parts = [f"{key} ({', '.join(f'{v}: {n} runs' for v, n in counts.items())})"
             for key, counts in list(differences.items())[:limit]]  # fmt: skip
    more = len(differences) - limit
    return "the runs differ in " + "; ".join(parts) + (f"; and {more} more keys" if more > 0 else "")


def require_one_setup(config: pd.DataFrame, varied: Iterable[str], what: str = "") -> None:
    """An :class:`AnalysisError` naming the keys when ``config``'s runs are not one setup
    (:func:`setup_differences`); ``what`` says what was asked of them (", so no table by x")."""
    differences = setup_differences(config, varied)
    if differences:
        raise AnalysisError(f"{describe_differences(differences)}: not one setup{what}; select one, "
                            "e.g. runs.select(experiment_name=[...]) or runs.select({...})")


def seed_labels(config: pd.DataFrame) -> pd.Series:
    """Each run's seed, its run id where none is recorded (a run of its own)."""
    if "seed" in config:
        return config["seed"].where(config["seed"].notna(), config["run_id"])
    return config["run_id"]


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
    per_query: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_QUERY_COLUMNS))

    def __len__(self) -> int:
        return len(self.config)

    def __repr__(self) -> str:
        return f"Runs({len(self)} runs from {self.source or 'memory'})"

    @property
    def ids(self) -> list[str]:
        return list(self.config["run_id"])

    @property
    def metric_names(self) -> list[str]:
        """The final metrics some run has (its metrics.json keys), sorted."""
        return sorted(c for c in self.metrics.columns if c != "run_id")

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

    def of_experiments(self, names: str | Iterable[str]) -> Runs:
        """The runs that are grid points of any experiment in ``names``: by their own
        ``experiment_name``, or by one a study shared the run with (a study trains a
        computation once: Table 3's URL(sft, sft) arm is figure3_weights' run; the
        ``experiments`` column, read from the run's experiments.txt)."""
        wanted = {names} if isinstance(names, str) else set(names)
        config = self.config if "experiments" in self.config else add_derived_columns(self.config.copy())
        keep = [not wanted.isdisjoint(served) for served in config["experiments"]]
        return self.subset(config.loc[keep, "run_id"])

    def subset(self, run_ids: Iterable[str]) -> Runs:
        ids = set(run_ids)
        return Runs(
            config=self.config[self.config["run_id"].isin(ids)].reset_index(drop=True),
            history=self.history[self.history["run_id"].isin(ids)].reset_index(drop=True),
            evals=self.evals[self.evals["run_id"].isin(ids)].reset_index(drop=True),
            metrics=self.metrics[self.metrics["run_id"].isin(ids)].reset_index(drop=True),
            source=self.source,
            per_query=self.per_query[self.per_query["run_id"].isin(ids)].reset_index(drop=True),
        )

    def complete(self) -> Runs:
        """The finished runs (a run still training, killed or failed has a partial history and
        no final metrics: counting it would shorten every curve and unpair the queries)."""
        if "status" not in self.config:
            return self
        return self.subset(self.config.loc[self.config["status"].isin(COMPLETE_STATUSES), "run_id"])

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
        per_query=pd.concat([p.per_query for p in parts], ignore_index=True),
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


def objective_of(weight: Any, direction: Any, loss: Any = "url") -> Any:
    """``sft``/``cl`` for a URL pair of one family, ``<weight>/<direction>`` for a mixed
    pair, the loss's name (``native_sft``, ``native_infonce``) for a run that trained with a
    native loss instead of URL."""
    if isinstance(loss, str) and loss != "url":
        return loss
    if pd.isna(weight) or pd.isna(direction):
        return float("nan")
    return weight if weight == direction else f"{weight}/{direction}"


def add_derived_columns(config: pd.DataFrame) -> pd.DataFrame:
    if "experiment_name" not in config:
        config["experiment_name"] = float("nan")
    # a source without a record of shared runs (W&B): each run serves its own experiment
    own = [(e,) if isinstance(e, str) else () for e in config["experiment_name"]]
    served = config["experiments"] if "experiments" in config else own
    config["experiments"] = [s if isinstance(s, tuple) else o for s, o in zip(served, own, strict=True)]
    # runs older than the native losses trained with URL
    config["loss"] = config["loss"].fillna("url") if "loss" in config else "url"
    if {"weight.name", "direction.name"} <= set(config.columns):
        config["objective"] = [
            objective_of(w, d, loss)
            for w, d, loss in zip(
                config["weight.name"], config["direction.name"], config["loss"], strict=True
            )
        ]
    return config


# -- local run directories ---------------------------------------------------------------
