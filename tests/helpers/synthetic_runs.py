"""Run directories written by hand for the findings' decision rules: known effects, known noise.

Each run directory has what ``python -m urlkit.run`` writes and the findings read: config.yaml
(the arm's config columns, nested), run.json, metrics.json, history.csv (w_pos_mean,
w_neg_mean per step) and per_query/wordsense_test_reranker.csv (ndcg@10 per query). Values
are drawn per arm as ``base[unit] + seed offset + noise``; ``centred=True`` shifts each arm to
the same grand mean, so two arms differ ONLY by noise (the contrast's point effect is 0), and
``planted`` then adds a known amount to chosen arms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def nested(flat: Mapping[str, object]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def arm_config(experiment: str, where: Mapping[str, object], seed: int) -> dict:
    flat = {"experiment_name": experiment, "seed": seed, "loss": "url",
            "weight.name": "sft", "direction.name": "sft"}  # fmt: skip
    for key, value in where.items():
        if key == "objective":  # objective is derived from weight, direction and loss
            if str(value).startswith("native_"):
                flat["loss"] = value
                family = "sft" if value == "native_sft" else "cl"
                flat["weight.name"] = flat["direction.name"] = family
            else:
                flat["weight.name"] = flat["direction.name"] = value
        else:
            flat[key] = value
    return nested(flat)


def write_arm(root: Path, experiment: str, label: str, where: Mapping[str, object],
              per_query: np.ndarray, weights: np.ndarray) -> None:  # fmt: skip
    """One run per seed: ``per_query`` (queries x seeds, points), ``weights`` (steps x seeds)."""
    for s in range(per_query.shape[1]):
        run = root / experiment / f"{label.replace('/', '-')},seed={s}"
        (run / "per_query").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(arm_config(experiment, where, s)))
        (run / "run.json").write_text(
            json.dumps({"run_id": f"{experiment}/{run.name}", "status": "finished"})
        )
        values = per_query[:, s] / 100
        (run / "metrics.json").write_text(json.dumps({"test/ndcg@10": float(values.mean())}))
        pd.DataFrame({"query_id": [f"q{i}" for i in range(len(values))], "ndcg@10": values}).to_csv(
            run / "per_query" / "wordsense_test_reranker.csv", index=False
        )
        steps = np.arange(1, weights.shape[0] + 1)
        pd.DataFrame(
            {"step": steps, "w_pos_mean": weights[:, s], "w_neg_mean": weights[:, s] - 0.3}
        ).to_csv(run / "history.csv", index=False)


def write_arms(root: Path, arms: Mapping[tuple[str, str], Mapping[str, object]], planted: Mapping[tuple[str, str], float],
               *, queries: int = 40, steps: int = 30, seeds: int = 3, query_sd: float = 15.0,
               weight_sd: float = 0.05, seed_sd: float = 2.0, rng_seed: int = 0) -> Path:  # fmt: skip
    """Run directories of ``arms`` ({(experiment, label): config selection}) under ``root``.

    Every arm shares the per-query base (the same test queries); noise is independent per
    arm, seed and query; each arm is centred to the same grand mean, then ``planted[(experiment,
    label)]`` points (and a hundredth of it on the per-step weights) are added.
    """
    rng = np.random.default_rng(rng_seed)
    base_q = rng.uniform(20, 80, size=queries)
    base_w = np.linspace(0.8, 0.4, steps)
    for key, where in arms.items():
        q = (
            base_q[:, None]
            + rng.normal(0, seed_sd, seeds)
            + rng.normal(0, query_sd, (queries, seeds))
        )
        q += base_q.mean() - q.mean() + planted.get(key, 0.0)
        w = base_w[:, None] + rng.normal(0, weight_sd, (steps, seeds))
        w += base_w.mean() - w.mean() + planted.get(key, 0.0) / 100
        write_arm(root, key[0], key[1], where, q, w)
    return root
