"""Training steps on 30 fresh groups, then on the same 30 again: does oneDNN's primitive
cache (one JIT-compiled kernel per product shape) slow the first pass? Run it with
ONEDNN_PRIMITIVE_CACHE_CAPACITY unset, 65536 and 0 (docs/performance.md, session 5).

    ONEDNN_PRIMITIVE_CACHE_CAPACITY=65536 python docs/bench/probes/cold_vs_warm_steps.py
"""

from __future__ import annotations

import os
import time

from _common import default_steps

step, batches = default_steps(30)
for label in ("cold", "warm"):
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    print(f"{label}: {(time.perf_counter() - start) / len(batches):.3f} s a step; "
          f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')}")
