"""Rerank a split with the one scoring function, score it with trec_eval, save and tabulate.

The library behind ``python -m urlkit.evaluate`` and the dev/test evaluation of a training run
(``urlkit.training.callbacks``) and the benchmark: :func:`rerank_split` scores the first
stage's top-k with the reranker, :func:`score` gives per-query metrics, :func:`save_evaluation`
writes them with the TREC run, :func:`results_table` lays the means out as the paper does.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from urlkit.data.candidates import Ranking, write_trec_run
from urlkit.data.format import Split
from urlkit.evaluation.metrics import METRICS, category_table, per_query_metrics
from urlkit.loss import relevance
from urlkit.model.lora import lora_merged
from urlkit.model.scoring import Reranker


@dataclass
class EvalSet:
    """A split to evaluate on, its first-stage ranking, and how many of its queries to score."""

    split: Split
    ranking: Ranking
    max_queries: int | None


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
    ``merge_lora``: LoRA folded into the base weights while scoring (a float32 sum rounded
    once to their dtype), the exact weights restored after (``urlkit.model.lora.lora_merged``;
    same scores up to float rounding, faster). A :class:`~urlkit.model.scoring.Reranker` scores
    through a view that knows the job's prompt tokens (``ScoringOptions.job_tokens``: with
    ``model.compile=auto`` a long job compiles the layers, a short one does not).
    """
    queries = split.queries[:max_queries] if max_queries else split.queries
    pairs = [(i, q, doc_id) for i, q in enumerate(queries) for doc_id, _ in ranking.get(q.id, [])[:depth]]
    encoded = [renderer.encode(split.instruction_for(q), q, split.corpus[d]) for _, q, d in pairs]
    shortest = [float("inf")] * len(queries)  # a query's shortest prompt: its prefix + the shortest document
    for (i, _, _), prompt in zip(pairs, encoded, strict=True):
        shortest[i] = min(shortest[i], len(prompt.input_ids))
    order = sorted(range(len(pairs)), key=lambda k: (shortest[pairs[k][0]], pairs[k][0], len(encoded[k].input_ids)))
    batches = [[encoded[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    if isinstance(reranker, Reranker):  # the job's size: model.compile=auto compiles a long one
        reranker = reranker.with_options(job_tokens=sum(len(prompt.input_ids) for prompt in encoded))
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
    _rank_nonfinite_last(scores, [q.id for _, q, _ in pairs], f"{split.name}/{split.split}")

    run: dict[str, dict[str, float]] = {q.id: {} for q in queries}
    for (_, q, doc_id), score in zip(pairs, scores.tolist(), strict=True):
        run[q.id][doc_id] = score
    return run


def _rank_nonfinite_last(scores: torch.Tensor, query_ids: list[str], label: str) -> None:
    """NaN and +-inf scores, in place, below every finite score of their query, and said.

    A NaN sorts anywhere (a NaN-scored positive came out first), so metrics over it are
    silently wrong. Not an error: the evaluation of one broken document should not end a
    benchmark, and an error on one rank's share would leave the others waiting to gather.
    """
    bad = ~torch.isfinite(scores)
    if not bad.any():
        return
    finite = scores[~bad]
    scores[bad] = (finite.min().item() if len(finite) else 0.0) - 1.0  # ties keep the first stage's order
    hit = sorted({query_ids[i] for i in bad.nonzero().flatten().tolist()})
    print(f"[urlkit] warning: {label}: {int(bad.sum())} of {len(scores)} reranker scores were not "
          f"finite (NaN or inf), in {len(hit)} queries (e.g. {', '.join(hit[:5])}); they are ranked "
          "last, below every finite score" + ("; EVERY score was: the metrics are the first stage's "
          "order, not the reranker's" if bad.all() else ""), file=sys.stderr, flush=True)  # fmt: skip


@torch.inference_mode()
def _relevance(reranker: torch.nn.Module, batch: dict, direction: str) -> torch.Tensor:
    return relevance(reranker(batch).float(), direction).cpu()


def first_stage_run(split: Split, ranking: Ranking, depth: int, max_queries: int | None = None):
    """The first stage's own top-``depth`` as a run (the BM25 row of the tables)."""
    queries = split.queries[:max_queries] if max_queries else split.queries
    return {q.id: {d: s for d, s in ranking.get(q.id, [])[:depth]} for q in queries}


def score(split: Split, run: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per-query metrics of ``run`` against the split's qrels (only the run's queries)."""
    qrels = {q.id: q.judgements for q in split.queries if q.id in run}
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


def evaluate_dataset(
    built, label: str, direction: str, evaluated: EvalSet, retriever: str, out_dir: Path, *,
    depth: int, batch_size: int, merge_lora: bool = True,
) -> tuple[list[dict], dict[str, float]]:  # fmt: skip
    """One split of one dataset: the first stage's top-``depth`` and (with ``built``, a
    reranker and its renderer) the reranker's scores of it, per-query files written to
    ``out_dir``. Returns the rows of the tables (``{"model", "dataset", "category",
    <metric>: mean}``) and the flat metrics."""
    split, ranking, max_queries = evaluated.split, evaluated.ranking, evaluated.max_queries
    runs = {retriever: first_stage_run(split, ranking, depth, max_queries)}
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
                     **{key.rsplit("/", 1)[-1]: value for key, value in means.items()}})  # fmt: skip
    print(f"[urlkit] {split.name}/{split.split}: {len(runs[retriever])} queries scored", flush=True)
    return rows, metrics


class Evaluator:
    """Reranks the first-stage top-``depth`` of its evaluation sets (by role: ``dev``,
    ``test``) with ``reranker`` and scores them against the qrels (built by
    :func:`urlkit.build.build_evaluator`)."""

    def __init__(
        self, reranker: torch.nn.Module, renderer, direction: str, sets: dict[str, EvalSet], depth: int,
        batch_size: int, retriever: str = "bm25", merge_lora: bool = True,
    ):  # fmt: skip
        self.reranker, self.renderer, self.direction, self.sets = reranker, renderer, direction, sets
        self.depth, self.batch_size, self.retriever = depth, batch_size, retriever
        self.merge_lora = merge_lora

    def rerank(self, role: str) -> dict[str, dict[str, float]]:
        s = self.sets[role]
        return rerank_split(
            self.reranker, self.renderer, s.split, s.ranking, direction=self.direction,
            depth=self.depth, batch_size=self.batch_size, max_queries=s.max_queries, merge_lora=self.merge_lora,
        )  # fmt: skip

    def means(self, role: str, run) -> dict[str, float]:
        per_query = score(self.sets[role].split, run)
        return {m: float(per_query[m].mean()) for m in METRICS}
