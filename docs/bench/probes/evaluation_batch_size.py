"""Documents/s of a trained run's evaluation at several batch sizes (and length-bucket call
costs), alternated in one process (docs/performance.md, session 5).

    python docs/bench/probes/evaluation_batch_size.py outputs/runs/<default run> [queries]
"""

from __future__ import annotations

import functools
import resource
import sys
import time

from _common import trained_run

import urlkit.model.scoring as scoring
from urlkit.evaluation.rerank import rerank_split
from urlkit.model import prefix_sharing

run_dir, queries = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
reranker, renderer, split, ranking = trained_run(run_dir, queries)
variants = [(64, 64), (128, 64), (256, 64), (512, 64), (512, 256), (1024, 256)]  # (batch, call_cost)
rerank_split(reranker, renderer, split, ranking, depth=25, progress=False)  # warm-up
seconds = {variant: [] for variant in variants}
for _ in range(2):
    for batch, call_cost in variants:
        scoring.prefix_tree = functools.partial(prefix_sharing.prefix_tree, call_cost=call_cost)
        start = time.perf_counter()
        run = rerank_split(reranker, renderer, split, ranking, depth=25, progress=False, batch_size=batch)
        seconds[(batch, call_cost)].append(time.perf_counter() - start)
documents = sum(len(docs) for docs in run.values())
for (batch, call_cost), times in seconds.items():
    print(f"batch {batch} call_cost {call_cost}: {[round(documents / s, 1) for s in times]} docs/s")
print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
