"""Seconds, minor page faults and system time per training step, to compare glibc malloc
settings in fresh processes, e.g. MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184
MALLOC_TOP_PAD_=536870912 against none (docs/performance.md, session 5).

    python docs/bench/probes/page_faults.py
"""

from __future__ import annotations

import os
import resource
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
picked = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))[:12].tolist()
batches = [collate([groups[i]]) for i in picked]
step = Stepper(built.reranker, cfg)
step(batches[0])
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for batch in batches[1:]:
    step(batch)
after, n = resource.getrusage(resource.RUSAGE_SELF), len(batches) - 1
print(f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')}: {(time.perf_counter() - start) / n:.3f} s a step, "
      f"{(after.ru_minflt - before.ru_minflt) // n} minor faults, system {(after.ru_stime - before.ru_stime) / n:.3f} s, "
      f"user {(after.ru_utime - before.ru_utime) / n:.3f} s a step")
