"""Training steps on 30 fresh groups, then on the same 30 again: does oneDNN's primitive
cache (one JIT-compiled kernel per product shape) slow the first pass? Run it with
ONEDNN_PRIMITIVE_CACHE_CAPACITY unset, 65536 and 0 (docs/performance.md, session 5).

    ONEDNN_PRIMITIVE_CACHE_CAPACITY=65536 python docs/bench/probes/cold_vs_warm_steps.py
"""

from __future__ import annotations

import os
import time

import torch

from urlkit.bench.training import Stepper
from urlkit.bench.workload import build, compose_config, load_data
from urlkit.data.groups import GroupCollator, TrainGroups

cfg = compose_config("default")
data = load_data(cfg)
built = build(cfg, torch.device("cpu"))
groups = TrainGroups(data.train, data.train_ranking, 4, hard_fraction=cfg.data.hard_fraction,
                     hard_depth=cfg.data.hard_depth, seed=0)
collate = GroupCollator(built.renderer, data.train, None)
picked = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))[:30].tolist()
batches = [collate([groups[i]]) for i in picked]
step = Stepper(built.reranker, cfg)
for label in ("cold", "warm"):
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    print(f"{label}: {(time.perf_counter() - start) / len(batches):.3f} s a step; "
          f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')}")
