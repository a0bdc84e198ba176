"""Evaluation while training (dev, every k steps) and after it (test), with the same scorer.

Both use :func:`urlkit.evaluate.rerank_split`, which calls the reranker that trains, so what
is measured is exactly what was trained; results go to the run directory (eval.csv,
metrics.json, per_query/) and to the Lightning loggers.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from omegaconf import DictConfig

from urlkit.build import Built, load_data_split
from urlkit.data.candidates import Ranking, first_stage
from urlkit.data.format import DataError, Split
from urlkit.evaluate import first_stage_run, rerank_split, results_table, save_evaluation, score
from urlkit.evaluation.metrics import METRICS
from urlkit.records import RunDirectory


@dataclass
class EvalSet:
    split: Split
    ranking: Ranking
    max_queries: int | None


class Evaluator:
    """Reranks a split's first-stage top-``depth`` and scores it against the qrels."""

    def __init__(
        self, built: Built, direction: str, sets: dict[str, EvalSet], depth: int, batch_size: int,
        retriever: str = "bm25", merge_lora: bool = True,
    ):  # fmt: skip
        self.built, self.direction, self.sets = built, direction, sets
        self.depth, self.batch_size, self.retriever = depth, batch_size, retriever
        self.merge_lora = merge_lora

    @classmethod
    def from_config(cls, cfg: DictConfig, built: Built) -> Evaluator:
        sets = {}
        for role, split_name, limit in (
            ("dev", cfg.data.dev_split, cfg.eval.dev_queries),
            ("test", cfg.data.test_split, cfg.eval.test_queries),
        ):
            if role == "dev" and not cfg.eval.every_n_steps:
                continue
            try:
                split = load_data_split(cfg.data, split_name)
            except DataError as err:
                if role == "test":
                    raise
                print(f"[urlkit] no dev evaluation: {err}", flush=True)
                continue
            ranking = first_stage(split, cfg.data.retriever, k=cfg.eval.depth, run_file=cfg.data.run_file)
            sets[role] = EvalSet(split, ranking, limit)
        return cls(built, cfg.direction.name, sets, cfg.eval.depth, cfg.eval.batch_size, cfg.data.retriever,
                   merge_lora=bool(cfg.eval.get("merge_lora", True)))

    def rerank(self, role: str) -> dict[str, dict[str, float]]:
        s = self.sets[role]
        return rerank_split(
            self.built.reranker, self.built.renderer, s.split, s.ranking, direction=self.direction,
            depth=self.depth, batch_size=self.batch_size, max_queries=s.max_queries, merge_lora=self.merge_lora,
        )  # fmt: skip

    def means(self, role: str, run) -> dict[str, float]:
        per_query = score(self.sets[role].split, run)
        return {m: float(per_query[m].mean()) for m in METRICS}


class PeriodicEvaluation(L.Callback):
    """Dev metrics every ``every_n_steps`` optimizer steps (rows of eval.csv, ``dev/*`` in W&B)."""

    def __init__(self, evaluator: Evaluator, run: RunDirectory, every_n_steps: int):
        self.evaluator, self.run, self.every = evaluator, run, every_n_steps
        self._last = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every or "dev" not in self.evaluator.sets or step % self.every or step == self._last:
            return
        self._last = step
        means = self.evaluator.means("dev", self.evaluator.rerank("dev"))
        split = self.evaluator.sets["dev"].split
        self.run.evals.append({"step": step, "split": "dev", "dataset": split.name, **means})
        for logger in trainer.loggers:
            logger.log_metrics({f"dev/{k}": v for k, v in means.items()}, step=step)
        print(f"[urlkit] step {step} dev " + " ".join(f"{k}={v:.4f}" for k, v in means.items()), flush=True)


class FinalEvaluation:
    """Test metrics of the trained reranker and of the first stage, written to the run dir."""

    def __init__(self, evaluator: Evaluator, run: RunDirectory):
        self.evaluator, self.records = evaluator, run

    def __call__(self, step: int) -> dict[str, float]:
        test = self.evaluator.sets["test"]
        split = test.split
        runs = {
            "reranker": self.evaluator.rerank("test"),
            self.evaluator.retriever: first_stage_run(split, test.ranking, self.evaluator.depth, test.max_queries),
        }
        metrics, rows = {}, []
        for model, run in runs.items():
            per_query = score(split, run)
            means = save_evaluation(self.records.per_query, split, model, run, per_query)
            prefix = "" if model == "reranker" else f"{model}/"
            metrics.update({f"{prefix}test/{m}": v for m, v in _strip(means).items()})
            rows.append({"model": model, "dataset": split.name, "category": split.category, **_strip(means)})
            self.records.evals.append({"step": step, "split": f"test:{model}", "dataset": split.name, **_strip(means)})
        self.records.write_metrics(metrics)
        per_dataset, _ = results_table(rows)
        print(f"[urlkit] test metrics (x100, top-{self.evaluator.depth} reranked):\n{per_dataset.to_string()}", flush=True)
        return metrics


def _strip(means: dict[str, float]) -> dict[str, float]:
    """``test/<dataset>/ndcg@10`` -> ``ndcg@10``."""
    return {key.rsplit("/", 1)[-1]: value for key, value in means.items()}
