"""What the evaluation's compiled layers cost a process on a cold and on a warm inductor cache:
three calls scoring 8 test queries' top 25 (batch 512), the first one compiling
(docs/performance.md, session 23). Run it twice on one fresh cache folder:

    d=$(mktemp -d); TORCHINDUCTOR_CACHE_DIR=$d python docs/bench/probes/compile_cold_warm.py   # cold
    TORCHINDUCTOR_CACHE_DIR=$d python docs/bench/probes/compile_cold_warm.py                    # warm
"""

from __future__ import annotations

import time

import torch
from _common import adapted_default_model

from urlkit.bench import evaluation

built, data, split = adapted_default_model(8)
batches = evaluation.rerank_batches(built.renderer, split, data.test_ranking, 25, 512)
scorer = built.reranker.with_options(compiled_layers=True)
scorer.eval()
print(f"inductor compile_threads={torch._inductor.config.compile_threads}")
for call in range(3):
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            scorer(batch)
    print(f"call {call}: {time.perf_counter() - start:.2f} s")
