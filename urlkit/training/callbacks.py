"""Evaluation while training (dev, every k steps) and after it (test), with the same scorer.

Both use :func:`urlkit.evaluation.rerank.rerank_split` (through the
:class:`~urlkit.evaluation.rerank.Evaluator` that :func:`urlkit.build.build_evaluator`
assembles), which calls the reranker that trains, so what is measured is exactly what was
trained; results go to the run directory (eval.csv, metrics.json, per_query/) and to the
Lightning loggers.

Under DDP every rank reranks every ``world_size``-th query in split order
(:func:`rerank_shared`: rank r takes queries r, r+R, r+2R, ...; they are not sorted by
length, so the shares cost about the same only on average), the rankings are gathered on
every rank, and rank 0 alone writes them: the metrics of one process, in about 1/R of the
time. The ranks other than 0 get ``run=None`` and write nothing.
"""

from __future__ import annotations

import copy
import dataclasses

import lightning as L

from urlkit.evaluation.metrics import METRICS
from urlkit.evaluation.rerank import (
    EvalSet,
    Evaluator,
    first_stage_run,
    results_table,
    save_evaluation,
    score,
)
from urlkit.records import RunDirectory
from urlkit.training import distributed


def rerank_shared(evaluator: Evaluator, role: str) -> dict[str, dict[str, float]]:
    """``evaluator.rerank(role)`` with the queries dealt over the ranks and the rankings
    gathered on every rank (in the split's query order); the plain call in one process."""
    rank, world = distributed.rank(), distributed.world_size()
    if world == 1:
        return evaluator.rerank(role)
    s = evaluator.sets[role]
    queries = s.split.queries[: s.max_queries] if s.max_queries else s.split.queries
    mine = copy.copy(evaluator)
    mine.sets = {role: EvalSet(dataclasses.replace(s.split, queries=queries[rank::world]), s.ranking, None)}
    gathered = {query: docs for part in distributed.gather(mine.rerank(role)) for query, docs in part.items()}
    return {q.id: gathered[q.id] for q in queries}


class PeriodicEvaluation(L.Callback):
    """Dev metrics every ``every_n_steps`` optimizer steps (rows of eval.csv, ``dev/*`` in W&B)."""

    def __init__(self, evaluator: Evaluator, run: RunDirectory | None, every_n_steps: int):
        self.evaluator, self.run, self.every = evaluator, run, every_n_steps
        self._seen = 0  # the optimizer step after the previous micro-batch

    def on_train_start(self, trainer, pl_module):
        # the step fit starts at: 0, or a resumed run's checkpoint step, whose dev row (if
        # any) the attempt that saved it wrote already (its evaluation runs before the save)
        self._seen = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # every micro-batch ends here; only the one that completed an optimizer step evaluates
        # (not the first micro-batches of train.accumulate, nor a step train.nonfinite=skip skipped)
        step, advanced = trainer.global_step, trainer.global_step != self._seen
        self._seen = step
        if not advanced or not self.every or "dev" not in self.evaluator.sets or step % self.every:
            return
        means = self.evaluator.means("dev", rerank_shared(self.evaluator, "dev"))
        split = self.evaluator.sets["dev"].split
        if self.run is None:
            return
        self.run.evals.append({"step": step, "split": "dev", "dataset": split.name, **means})
        for logger in trainer.loggers:
            logger.log_metrics({f"dev/{k}": v for k, v in means.items()}, step=step)
        print(f"[urlkit] step {step} dev " + " ".join(f"{k}={v:.4f}" for k, v in means.items()), flush=True)


class MixtureLog(L.Callback):
    """Items drawn from each source of a training mixture so far: ``mixture/<source>`` in the
    loggers at every optimizer step, and in run.json (``mixture``) when training ends. Read from
    the stream's schedule at the items consumed, so a resumed run logs the same counts."""

    def __init__(self, stream, run: RunDirectory, items_consumed):
        self.stream, self.run, self.items_consumed = stream, run, items_consumed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        counts = self.stream.items_per_source(self.items_consumed())
        for logger in trainer.loggers:
            logger.log_metrics({f"mixture/{name}": n for name, n in counts.items()}, step=trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        counts = self.stream.items_per_source(self.items_consumed())
        weights = {s.name: s.weight for s in self.stream.sources}
        self.run.update_info(mixture={name: {"weight": weights[name], "items": n} for name, n in counts.items()})
        print(f"[urlkit] training items per source: {counts}", flush=True)


class FinalEvaluation:
    """Test metrics of the trained reranker and of the first stage, written to the run dir."""

    def __init__(self, evaluator: Evaluator, run: RunDirectory | None):
        self.evaluator, self.records = evaluator, run

    def __call__(self, step: int) -> dict[str, float]:
        test = self.evaluator.sets["test"]
        split = test.split
        runs = {
            "reranker": rerank_shared(self.evaluator, "test"),
            self.evaluator.retriever: first_stage_run(split, test.ranking, self.evaluator.depth, test.max_queries),
        }
        metrics, rows = {}, []
        for model, run in runs.items():
            per_query = score(split, run)
            if self.records is None:  # a rank other than 0: the metrics, nothing written
                prefix = "" if model == "reranker" else f"{model}/"
                metrics.update({f"{prefix}test/{m}": float(per_query[m].mean()) for m in METRICS})
                continue
            means = save_evaluation(self.records.per_query, split, model, run, per_query)
            prefix = "" if model == "reranker" else f"{model}/"
            metrics.update({f"{prefix}test/{m}": v for m, v in _strip(means).items()})
            rows.append({"model": model, "dataset": split.name, "category": split.category, **_strip(means)})
            self.records.evals.append({"step": step, "split": f"test:{model}", "dataset": split.name, **_strip(means)})
        if self.records is None:
            return metrics
        self.records.write_metrics(metrics)
        per_dataset, _ = results_table(rows)
        # the split by name: data.test_split=dev (tuning without reading test) says so here
        print(
            f"[urlkit] test metrics on {split.name}/{split.split} (x100, top-{self.evaluator.depth} reranked):\n"
            f"{per_dataset.to_string()}",
            flush=True,
        )
        return metrics


def _strip(means: dict[str, float]) -> dict[str, float]:
    """``test/<dataset>/ndcg@10`` -> ``ndcg@10``."""
    return {key.rsplit("/", 1)[-1]: value for key, value in means.items()}


class _CountingSteps:
    """A training bar in optimizer steps (``train.max_steps``, the history's rows), not in
    micro-batches: with ``train.accumulate=k`` Lightning's bars counted k micro-batches a step
    against a total of max_steps ("4/2" at the end of a 2-step run). Both of Lightning's bars
    draw ``batch_idx + 1``; this hands them the steps done instead."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._first_step = trainer.global_step  # a resumed run's bar counts what is left
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - self._first_step - 1)


class _RichSteps(_CountingSteps, L.pytorch.callbacks.RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        return "training steps"  # Lightning's "Epoch 0/-2" under max_epochs=-1 (max_steps runs)


class _TqdmSteps(_CountingSteps, L.pytorch.callbacks.TQDMProgressBar):
    pass


def step_progress_bar() -> L.Callback:
    """The bar Lightning would pick (Rich when installed, else tqdm), counting optimizer steps."""
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    return _RichSteps() if _RICH_AVAILABLE else _TqdmSteps()
