"""Benchmark suites: several datasets in one evaluation, one table and one CSV (the paper's
Table 14 per dataset and Table 4 per category).

A suite is a file of the ``benchmark`` config group (``conf/benchmark/<suite>.yaml``)::

    name: embedded
    metric: ndcg@10          # an entry's metric unless it names its own
    data: {}                 # keys every entry's data config gets (e.g. retriever: trec)
    datasets:
      wordsense: {category: T2T, data: {path: data/wordsense}}
      manpages: {category: T2T, metric: ndcg@10, split: test, data: {path: data/manpages}}

An entry's data config is the composed ``data`` group, then the suite's ``data``, then the
entry's ``data`` (so ``format``, ``dataset``, ``retriever``, ``run_file`` ... may differ per
dataset). Each dataset's result is written to ``<out>/benchmark/<dataset>.json`` as soon as it
is done; run the same command again in the same folder and finished datasets are read back,
not recomputed (a result computed under other settings is recomputed). The table has one row
per dataset (its own metric, x100) and one column per model; the category rows average a
category's datasets and the last row all datasets (not the categories), as Table 4 does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from urlkit.atomic import atomic_write
from urlkit.errors import ConfigError
from urlkit.evaluation.metrics import MAIN_METRIC, METRICS, category_table

RESULTS_FOLDER = "benchmark"
TABLE_FILE = "benchmark.csv"


@dataclass(frozen=True)
class SuiteEntry:
    """One dataset of a suite: its name, Table 4 category, metric, split and data config."""

    name: str
    category: str
    metric: str
    split: str
    data: DictConfig


def suite_entries(benchmark: DictConfig, base_data: DictConfig | None, split: str | None = None) -> list[SuiteEntry]:
    """The datasets of a suite, each with its merged data config (see the module docstring);
    ``split``: every dataset's split (default: the entry's own, else its data's test split)."""
    suite = benchmark.get("name", "benchmark")
    datasets = benchmark.get("datasets")
    if not isinstance(datasets, DictConfig) or not datasets:
        raise ConfigError(f"benchmark={suite}: 'datasets' must map dataset names to entries")
    default_metric = benchmark.get("metric", MAIN_METRIC)
    base = OmegaConf.to_container(base_data, resolve=False) if base_data is not None else {}
    shared = OmegaConf.to_container(benchmark.get("data") or OmegaConf.create({}), resolve=True)
    entries = []
    for name, entry in datasets.items():
        where = f"benchmark.datasets.{name}"
        if not isinstance(entry, DictConfig) or not entry.get("category"):
            raise ConfigError(f"{where}: each dataset needs a category (T2T, T2I, IT2I, ...)")
        metric = entry.get("metric", default_metric)
        if metric not in METRICS:
            raise ConfigError(f"{where}.metric={metric!r} is not one of {', '.join(METRICS)}")
        own = OmegaConf.to_container(entry.get("data") or OmegaConf.create({}), resolve=True)
        data = OmegaConf.merge(OmegaConf.create(base), shared, own, {"name": str(name)})
        if data.get("path") in (None, "???"):
            raise ConfigError(f"{where}.data.path must be given (the dataset's folder or file)")
        own_split = split or entry.get("split") or data.get("test_split", "test")
        entries.append(SuiteEntry(str(name), str(entry.category), str(metric), str(own_split), data))
    return entries


def run_suite(
    entries: list[SuiteEntry],
    evaluate_one: Callable[[SuiteEntry], list[dict[str, Any]]],
    out_dir: Path,
    settings: dict[str, Any],
) -> pd.DataFrame:
    """Evaluate every entry (or read back its saved result); rows of ``{"model", "dataset",
    "category", "metric", "score", <every metric>}``.

    ``evaluate_one(entry)`` returns one row per model (``{"model", <metric>: mean, ...}``);
    ``settings`` (models, depth, query limit, ...) must match for a saved result to be reused.
    """
    folder = Path(out_dir) / RESULTS_FOLDER
    rows: list[dict[str, Any]] = []
    for entry in entries:
        path = folder / f"{entry.name}.json"
        key = {**settings, "split": entry.split, "data": OmegaConf.to_container(entry.data, resolve=True)}
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        # a result saved before its metric existed (success@k) is computed again, not read back
        if (saved is not None and saved.get("settings") == json.loads(json.dumps(key))
                and all(entry.metric in row for row in saved.get("rows", []))):
            print(f"[urlkit] {entry.name}: read back from {path}", flush=True)
            models = saved["rows"]
        else:
            if saved is not None:
                print(f"[urlkit] {entry.name}: {path} was computed with other settings; recomputing", flush=True)
            models = evaluate_one(entry)
            text = json.dumps({"settings": key, "rows": models}, indent=1)
            atomic_write(path, lambda f, text=text: f.write(text))
        for row in models:
            rows.append({**row, "dataset": entry.name, "category": entry.category,
                         "metric": entry.metric, "score": row[entry.metric]})  # fmt: skip
    return pd.DataFrame(rows)


def evaluate_suite(
    benchmark: DictConfig, base_data: DictConfig | None, built, label: str, direction: str, out_dir: Path, *,
    depth: int, batch_size: int, max_queries: int | None, merge_lora: bool = True, settings: dict | None = None,
    split: str | None = None, per_query_dir: Path | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Every dataset of the suite with one model (``built``; None: the first stage alone), the
    per-query files under ``per_query_dir`` (default ``<out_dir>/per_query/``) named by the
    suite's dataset names (unique within a suite, whatever the datasets call themselves);
    writes and prints the table."""
    per_query_dir = Path(per_query_dir) if per_query_dir is not None else Path(out_dir) / "per_query"
    from urlkit.build import evaluation_set
    from urlkit.evaluation.rerank import evaluate_dataset

    def evaluate_one(entry: SuiteEntry) -> list[dict[str, Any]]:
        evaluated = evaluation_set(entry.data, entry.split, depth, max_queries)
        evaluated.split.name = entry.name
        rows, _ = evaluate_dataset(
            built, label, direction, evaluated, entry.data.retriever, per_query_dir,
            depth=depth, batch_size=batch_size, merge_lora=merge_lora,
        )  # fmt: skip
        return rows

    key = {"model": label, "depth": depth, "max_queries": max_queries, **(settings or {})}
    results = run_suite(suite_entries(benchmark, base_data, split), evaluate_one, Path(out_dir), key)
    write_suite(out_dir, benchmark.get("name", "benchmark"), results)
    return results


def suite_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-dataset scores (x100, each dataset's own metric), one column per model, then one
    row per category (the mean of its datasets) and ``all`` (the mean over datasets)."""
    models = list(dict.fromkeys(results["model"]))
    wide = results.pivot_table(index=["category", "dataset", "metric"], columns="model", values="score", sort=False)
    wide = wide[models].mul(100).reset_index()
    wide.insert(0, "row", "dataset")
    averages = []
    for category, group in wide.groupby("category", sort=False):
        averages.append({"row": "category", "category": category, "dataset": f"mean of {len(group)}",
                         "metric": _metrics(group), **group[models].mean().to_dict()})  # fmt: skip
    averages.append({"row": "all", "category": "all", "dataset": f"mean of {len(wide)}",
                     "metric": _metrics(wide), **wide[models].mean().to_dict()})  # fmt: skip
    table = pd.concat([wide, pd.DataFrame(averages)], ignore_index=True)
    table.columns.name = None
    return table.round({m: 2 for m in models})


def category_layout(results: pd.DataFrame) -> pd.DataFrame:
    """Table 4: one row per model, ``<category>_<n datasets>`` columns, then ``all_<n>``."""
    return category_table(results, metric="score")


def write_suite(out_dir: Path, suite: str, results: pd.DataFrame) -> Path:
    """The one CSV of a suite (``<out>/benchmark.csv``) and the two printed tables."""
    table = suite_table(results)
    path = Path(out_dir) / TABLE_FILE
    atomic_write(path, lambda f: table.to_csv(f, index=False))
    datasets = table[table["row"] == "dataset"].drop(columns="row").set_index(["category", "dataset", "metric"])
    print(f"\nbenchmark {suite}: {len(datasets)} datasets, each on its own metric (x100)")
    print(datasets.to_string())
    print(f"\nTable 4 layout (x100):\n{category_layout(results).to_string()}")
    print(f"\nwritten to {path}", flush=True)
    return path


def _metrics(group: pd.DataFrame) -> str:
    return "/".join(dict.fromkeys(group["metric"]))
