"""bf16 GFLOP/s of the model's 7 projection shapes when one layer's weights stay in cache
(what the benchmark's "ceiling at the model's shapes" probes) vs 30 layers of distinct
weights streamed from memory, as a decoder pass does (docs/performance.md, session 5).

    python docs/bench/probes/streamed_projections.py
"""

from __future__ import annotations

import time

import torch

SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
weights = [torch.randn(out, inp, dtype=torch.bfloat16) for _ in range(30) for out, inp in SHAPES]


def gflops(rows: int, operands: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    inputs = {width: torch.randn(rows, width, dtype=torch.bfloat16) for width in (576, 1536)}
    for w in operands:
        inputs[w.shape[1]] @ w.T
    start = time.perf_counter()
    for _ in range(repeats):
        for w in operands:
            inputs[w.shape[1]] @ w.T
    seconds = (time.perf_counter() - start) / repeats
    return seconds, sum(2 * rows * w.numel() for w in operands) / seconds / 1e9


for rows in (65, 156, 292, 876, 2048):
    _, hot = gflops(rows, weights[:7], repeats=90)
    seconds, streamed = gflops(rows, weights, repeats=3)
    print(f"{rows} rows: one layer in cache {hot:.0f} GFLOP/s, 30 layers streamed {streamed:.0f} GFLOP/s "
          f"({seconds * 1e3:.1f} ms a pass)")
