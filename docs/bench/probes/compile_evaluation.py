"""Evaluation docs/s eager vs torch.compile of the decoder's layers (``layers``) or of its
MLPs and RMS norms only (``mlp``), with compile time (docs/performance.md, session 5).

    python docs/bench/probes/compile_evaluation.py mlp|layers
"""

from __future__ import annotations

import sys
import time

import torch
from _common import adapted_default_model

from urlkit.bench import evaluation

built, data, split = adapted_default_model(40)
batches = evaluation.rerank_batches(built.renderer, split, data.test_ranking, 25, 64)
documents = sum(len(b["input_ids"]) for b in batches)
scorer = built.reranker.with_options()
scorer.eval()


@torch.inference_mode()
def scored():
    start = time.perf_counter()
    scores = torch.cat([scorer(b) for b in batches])
    return documents / (time.perf_counter() - start), scores


scored()
eager_rate, eager = scored()
print(f"eager: {eager_rate:.1f} docs/s")
start = time.perf_counter()
for layer in scorer.decoder.layers:
    if sys.argv[1] == "layers":
        layer.compile(dynamic=True)
    else:
        for module in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
            module.compile(dynamic=True)
scored()
print(f"first compiled pass, compile included: {time.perf_counter() - start:.0f} s")
for _ in range(2):
    rate, compiled = scored()
    print(f"compiled: {rate:.1f} docs/s; max |score - eager| {(compiled - eager).abs().max().item():.3f}")
