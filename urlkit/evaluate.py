"""Evaluation: rerank the first stage's top-k with the one scoring function, score with trec_eval.

    python -m urlkit.evaluate                          # untrained default backbone + BM25 row
    python -m urlkit.evaluate run_dir=outputs/runs/<run>   # a trained run, on its data
    python -m urlkit.evaluate data.path=/data/beir/scifact # any BEIR folder, no code changes
    python -m urlkit.evaluate model=none               # BM25 alone
    python -m urlkit.evaluate benchmark=embedded       # a suite: every dataset, one table + CSV

Writes to its output directory (or the run's): ``metrics.json``, ``per_query/<dataset>_<model>.csv``
and the TREC run files ``per_query/<dataset>_<model>.trec``; prints the metrics table with
BM25 as one of its rows and the Table 4 category layout. With ``benchmark=<suite>`` it does
that for every dataset of the suite, and writes ``benchmark.csv`` and ``benchmark/<dataset>.json``
(run it again with ``hydra.run.dir=<that folder>`` to resume: finished datasets are read back).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from urlkit.data.candidates import Ranking, write_trec_run
from urlkit.data.format import Split
from urlkit.evaluation.metrics import MAIN_METRIC, METRICS, category_table, per_query_metrics
from urlkit.loss import relevance
from urlkit.model.lora import lora_merged


def rerank_split(
    reranker: torch.nn.Module,
    renderer,
    split: Split,
    ranking: Ranking,
    *,
    direction: str = "sft",
    depth: int = 25,
    batch_size: int = 64,
    max_queries: int | None = None,
    progress: bool = True,
    merge_lora: bool = True,
) -> dict[str, dict[str, float]]:
    """Scores of the top-``depth`` candidates of each query: ``{query id: {doc id: score}}``.

    Each query's candidates are batched together (the reranker computes their shared prompt
    prefix once, see ``urlkit.model.prefix_sharing``), queries in order of prompt length and
    candidates by length within a query (less padding; the scores do not depend on the
    batching). Scored under ``inference_mode`` with the model in eval mode, ranked by the
    direction's relevance (sft/rand: the yes-vs-rest log-odds; cl: the yes logit).
    ``merge_lora``: LoRA folded into float32 base weights while scoring, the exact weights
    restored after (``urlkit.model.lora.lora_merged``; same scores up to float rounding, faster).
    """
    queries = split.queries[:max_queries] if max_queries else split.queries
    pairs = [(i, q, doc_id) for i, q in enumerate(queries) for doc_id, _ in ranking.get(q.id, [])[:depth]]
    encoded = [renderer.encode(split.instruction_for(q), q, split.corpus[d]) for _, q, d in pairs]
    shortest = [float("inf")] * len(queries)  # a query's shortest prompt: its prefix + the shortest document
    for (i, _, _), prompt in zip(pairs, encoded, strict=True):
        shortest[i] = min(shortest[i], len(prompt.input_ids))
    order = sorted(range(len(pairs)), key=lambda k: (shortest[pairs[k][0]], pairs[k][0], len(encoded[k].input_ids)))
    batches = [[encoded[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    bar = tqdm(batches, desc=f"scoring {split.name}/{split.split}", unit="batch", disable=not progress, file=sys.stderr)

    was_training = reranker.training
    reranker.eval()
    try:
        with lora_merged(reranker) if merge_lora else contextlib.nullcontext():
            batch_scores = [_relevance(reranker, renderer.collate(batch), direction) for batch in bar]
    finally:
        reranker.train(was_training)
    scores = torch.empty(len(pairs))
    if batch_scores:
        scores[order] = torch.cat(batch_scores)

    run: dict[str, dict[str, float]] = {q.id: {} for q in queries}
    for (_, q, doc_id), score in zip(pairs, scores.tolist(), strict=True):
        run[q.id][doc_id] = score
    return run


@torch.inference_mode()
def _relevance(reranker: torch.nn.Module, batch: dict, direction: str) -> torch.Tensor:
    return relevance(reranker(batch).float(), direction).cpu()


def first_stage_run(split: Split, ranking: Ranking, depth: int, max_queries: int | None = None):
    """The first stage's own top-``depth`` as a run (the BM25 row of the tables)."""
    queries = split.queries[:max_queries] if max_queries else split.queries
    return {q.id: {d: s for d, s in ranking.get(q.id, [])[:depth]} for q in queries}


def score(split: Split, run: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per-query metrics of ``run`` against the split's qrels (only the run's queries)."""
    qrels = {q.id: q.qrels for q in split.queries if q.id in run}
    return per_query_metrics(qrels, run)


def save_evaluation(
    out_dir: Path, split: Split, model: str, run: dict[str, dict[str, float]], per_query: pd.DataFrame
) -> dict[str, float]:
    """Write per-query metrics and the TREC run; return the means as flat metric keys."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{split.name}_{split.split}_{model}"
    per_query.to_csv(out_dir / f"{stem}.csv")
    ranked = {q: sorted(docs.items(), key=lambda kv: -kv[1]) for q, docs in run.items()}
    write_trec_run(out_dir / f"{stem}.trec", ranked, tag=model)
    return {f"{split.split}/{split.name}/{m}": float(per_query[m].mean()) for m in METRICS}


def results_table(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-dataset metric table, Table 4 category layout) from rows of
    ``{"model", "dataset", "category", <metric>: mean, ...}``."""
    frame = pd.DataFrame(results)
    per_dataset = frame.set_index(["dataset", "model"])[list(METRICS)].mul(100).round(2)
    return per_dataset, category_table(frame)


def evaluate(cfg) -> dict[str, float]:
    """The Hydra app's work: rerank one split (or every dataset of ``benchmark=<suite>``) with
    one model (and the first stage), score, save."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from urlkit.build import build_reranker, load_trained
    from urlkit.records import RunDirectory

    out = RunDirectory(HydraConfig.get().runtime.output_dir)
    data_cfg, direction, label, built = cfg.data, cfg.direction.name, cfg.model.name, None
    if cfg.run_dir:
        built, run_cfg = load_trained(cfg.run_dir)
        direction, label = run_cfg.direction.name, Path(cfg.run_dir).name
        overridden = any(o.split("=")[0].lstrip("+").startswith("data") for o in HydraConfig.get().overrides.task)
        data_cfg = cfg.data if overridden else run_cfg.data
    elif cfg.model.name != "none":
        built = build_reranker(cfg, trainable=False)
    out.write_config(OmegaConf.to_container(cfg, resolve=True))

    def evaluate_one(data, split_name: str) -> tuple[list[dict], dict[str, float]]:
        return evaluate_dataset(
            built, label, direction, data, split_name, out.per_query, depth=cfg.depth,
            batch_size=cfg.batch_size, max_queries=cfg.max_queries, merge_lora=bool(cfg.get("merge_lora", True)),
        )  # fmt: skip

    if cfg.get("benchmark"):
        from urlkit.evaluation.benchmark import run_suite, suite_entries, write_suite

        entries = suite_entries(cfg.benchmark, data_cfg)
        settings = {"model": label, "run_dir": cfg.run_dir, "depth": cfg.depth, "max_queries": cfg.max_queries}
        results = run_suite(entries, lambda entry: evaluate_one(entry.data, entry.split)[0], out.path, settings)
        write_suite(out.path, cfg.benchmark.name, results)
        metrics = {f"{r.model}/{r.dataset}/{r.metric}": float(r.score) for r in results.itertuples()}
        out.write_metrics(metrics)
        return metrics

    rows, metrics = evaluate_one(data_cfg, cfg.split)
    out.write_metrics(metrics)
    per_dataset, categories = results_table(rows)
    print(f"\n{rows[0]['dataset']}/{cfg.split}: top-{cfg.depth} of {data_cfg.retriever} reranked (metrics x100)")
    print(per_dataset.to_string())
    print(f"\nTable 4 layout ({MAIN_METRIC} x100):\n{categories.to_string()}")
    print(f"\nwritten to {out.path}")
    return metrics


def evaluate_dataset(
    built, label: str, direction: str, data_cfg, split_name: str, out_dir: Path, *,
    depth: int, batch_size: int, max_queries: int | None, merge_lora: bool = True,
) -> tuple[list[dict], dict[str, float]]:  # fmt: skip
    """One split of one dataset: the first stage's top-``depth`` and (with ``built``) the
    reranker's scores of it, per-query files written to ``out_dir``. Returns the rows of the
    tables (``{"model", "dataset", "category", <metric>: mean}``) and the flat metrics."""
    from urlkit.build import load_data_split
    from urlkit.data.candidates import first_stage

    split = load_data_split(data_cfg, split_name)
    ranking = first_stage(split, data_cfg.retriever, k=depth, run_file=data_cfg.run_file)
    runs = {data_cfg.retriever: first_stage_run(split, ranking, depth, max_queries)}
    if built is not None:
        runs[label] = rerank_split(
            built.reranker, built.renderer, split, ranking, direction=direction,
            depth=depth, batch_size=batch_size, max_queries=max_queries, merge_lora=merge_lora,
        )  # fmt: skip
    metrics, rows = {}, []
    for model, run in runs.items():
        per_query = score(split, run)
        means = save_evaluation(out_dir, split, model, run, per_query)
        metrics.update({f"{model}/{key}": value for key, value in means.items()})
        rows.append({"model": model, "dataset": split.name, "category": split.category,
                     **{key.rsplit("/", 1)[-1]: value for key, value in means.items()}})
    print(f"[urlkit] {split.name}/{split.split}: {len(runs[data_cfg.retriever])} queries scored", flush=True)
    return rows, metrics


def main() -> None:
    import hydra

    from urlkit.paths import REPO_ROOT
    from urlkit.resolvers import register_resolvers

    register_resolvers()
    # an absolute config path: the `urlkit-evaluate` console script has no package-relative one
    hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="evaluate", version_base="1.3")(_checked_evaluate)()


def _checked_evaluate(cfg) -> dict[str, float]:
    """:func:`evaluate` behind the config checks; bad input ends with ``error: <message>``, exit 2."""
    from urlkit.config_checks import check_evaluate_config
    from urlkit.errors import reported_errors

    with reported_errors():
        check_evaluate_config(cfg)
        return evaluate(cfg)


if __name__ == "__main__":
    main()
