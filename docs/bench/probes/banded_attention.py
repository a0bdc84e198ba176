"""Training's explicit attention banded (``ScoringOptions.banded_attention``, the default) against
dense, on the default experiment's model, in one process: 1+N training steps over new groups,
each group stepped by both variants in alternating order (docs/performance.md, sessions 14
and 15). ``QUERIES=2``: steps of two queries' groups (one row of both queries' openings and
documents).

    [QUERIES=q] python docs/bench/probes/banded_attention.py [steps [negatives ...]]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from _common import training

import urlkit.model.fused_decoder as fused
from urlkit.bench.training import Stepper


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def steps(negatives: int, count: int, queries: int) -> None:
    cfg, _, built, groups, collate = setup = training(negatives)
    picked = setup.new_groups((count + 2) * queries)
    stepper = Stepper(built.reranker, cfg)
    variants = {flag: built.reranker.with_options(banded_attention=flag) for flag in (True, False)}
    times: dict[bool, list[float]] = {True: [], False: []}
    plans, plan = [], fused.attention_plan
    fused.attention_plan = lambda *args, **how: plans.append(plan(*args, **how)) or plans[-1]
    banded_steps = []  # whether the banded variant's pass banded its attention
    for index in range(count + 2):  # each step's new groups stepped by both, the order alternated
        batch = collate([groups[group] for group in picked[index * queries : (index + 1) * queries]])
        for flag in ((True, False) if index % 2 == 0 else (False, True)):
            stepper.reranker = variants[flag]
            plans.clear()
            elapsed = seconds(lambda b=batch: stepper(b))
            if index >= 2:
                times[flag].append(elapsed)
                if flag:
                    banded_steps.append(any(p.banded for p in plans))
    fused.attention_plan = plan
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    print(f"{queries} x 1+{negatives} training step: banded {statistics.mean(times[True]):.4f} s, dense "
          f"{statistics.mean(times[False]):.4f} s (means over the same {len(ratios)} steps of new groups); paired ratio "
          f"median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    if any(banded_steps):
        pairs = [(a, b) for a, b, banded in zip(times[True], times[False], banded_steps, strict=True) if banded]
        print(f"  the {len(pairs)} steps whose pass was banded: {statistics.mean(a for a, _ in pairs):.4f} against "
              f"{statistics.mean(b for _, b in pairs):.4f} s, paired ratio median "
              f"{statistics.median(a / b for a, b in pairs):.3f}", flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    for negatives in [int(n) for n in sys.argv[2:]] or [4, 16]:
        steps(negatives, count, int(os.environ.get("QUERIES", "1")))
