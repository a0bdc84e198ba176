"""Evaluation of a trained bf16 run with its LoRA merged vs unmerged: speed (alternated
rounds) and distance to the same weights scored in float32 (docs/performance.md, session 5).

    python docs/bench/probes/merged_bf16_evaluation.py outputs/runs/<default run> [queries]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from _common import trained_run

from urlkit.evaluation.rerank import rerank_split, score

run_dir, queries = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 120
reranker, renderer, split, ranking = trained_run(run_dir, queries)


def scored(merge: bool):
    start = time.perf_counter()
    run = rerank_split(reranker, renderer, split, ranking, depth=25, progress=False, merge_lora=merge)
    return run, time.perf_counter() - start


seconds, runs = {False: [], True: []}, {}
for _ in range(2):
    for merge in (False, True):
        runs[merge], elapsed = scored(merge)
        seconds[merge].append(elapsed)
documents = sum(len(docs) for docs in runs[True].values())
for parameter in reranker.decoder.parameters():  # the same weights, computed in float32
    if parameter.dtype == torch.bfloat16:
        parameter.data = parameter.data.float()
reference, _ = scored(False)
spread = np.std([abs(v) for docs in reference.values() for v in docs.values()])
print(f"{documents} documents; float32 NDCG@10 {score(split, reference)['ndcg@10'].mean():.4f}; std of |score| {spread:.3f}")
for merge in (False, True):
    gaps = np.abs([runs[merge][q][d] - reference[q][d] for q in reference for d in reference[q]])
    print(f"bf16 {'merged' if merge else 'unmerged'}: docs/s {[round(documents / s, 1) for s in seconds[merge]]}, "
          f"|score - float32| max {gaps.max():.4f} mean {gaps.mean():.4f}, "
          f"NDCG@10 {score(split, runs[merge])['ndcg@10'].mean():.4f}")
