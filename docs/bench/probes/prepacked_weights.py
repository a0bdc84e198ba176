"""The 30 layers' frozen bf16 projections (SmolLM2-135M shapes, distinct weights, so they
stream from memory as in the model) through F.linear vs oneDNN prepacked weights
(torch.ops.mkldnn._reorder_linear_weight + _linear_pointwise, what inductor's CPU freezing
uses), at a training pass's and an evaluation pass's row counts (docs/performance.md, session 5).

    python docs/bench/probes/prepacked_weights.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # q k v o gate up down
weights = [torch.randn(out, inp, dtype=torch.bfloat16) for _ in range(30) for out, inp in SHAPES]


def seconds(product, operands, widths, inputs, repeats: int = 3) -> float:
    for operand, width in zip(operands, widths, strict=True):  # warm-up
        product(inputs[width], operand)
    start = time.perf_counter()
    for _ in range(repeats):
        for operand, width in zip(operands, widths, strict=True):
            product(inputs[width], operand)
    return (time.perf_counter() - start) / repeats


widths = [w.shape[1] for w in weights]
for rows in (2, 65, 156, 292, 876):
    inputs = {width: torch.randn(rows, width, dtype=torch.bfloat16) for width in (576, 1536)}
    plain = seconds(F.linear, weights, widths, inputs)
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in weights]
    packed_seconds = seconds(lambda x, p: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], ""), packed, widths, inputs)
    print(f"{rows} rows: F.linear {plain * 1e3:.1f} ms, prepacked {packed_seconds * 1e3:.1f} ms for 30 layers")
