"""The fused decoder pass against transformers' forward, alternated round by round in one
process: a training step of the default experiment (random 1+4 groups), and, given a trained
run, its merged evaluation at batch 512 (docs/performance.md, session 6).

    python docs/bench/probes/fused_decoder.py [outputs/runs/<default run> [queries]]
"""

from __future__ import annotations

import sys
import time
from statistics import median

from _common import default_steps, trained_run

from urlkit.bench.training import Stepper
from urlkit.bench.workload import compose_config
from urlkit.evaluation.rerank import rerank_split
from urlkit.model.lora import lora_merged

ROUNDS = 3


def alternate(variants: dict, run) -> dict[str, list[float]]:
    """Seconds per round of ``run(variant)``, the variants alternated, after one warm-up each."""
    for variant in variants.values():
        run(variant)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(ROUNDS):
        for name, variant in variants.items():
            start = time.perf_counter()
            run(variant)
            seconds[name].append(time.perf_counter() - start)
        print(f"round {round_}: " + ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items()), flush=True)
    return seconds


step, batches = default_steps(12)
cfg = compose_config("default")
steppers = {"fused": Stepper(step.reranker, cfg), "transformers": Stepper(step.reranker, cfg, fused_layers=False)}
seconds = alternate(steppers, lambda stepper: [stepper(batch) for batch in batches])
for name, values in seconds.items():
    print(f"training, {name}: {median(values) / len(batches) * 1000:.0f} ms a 1+4 step (median of {ROUNDS} rounds of {len(batches)} steps)")

if len(sys.argv) > 1:
    reranker, renderer, split, ranking = trained_run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)
    documents = sum(len(ranking.get(query.id, [])[:25]) for query in split.queries)
    rerankers = {"fused": reranker, "transformers": reranker.with_options(fused_layers=False)}
    with lora_merged(reranker.decoder):
        seconds = alternate(rerankers, lambda r: rerank_split(r, renderer, split, ranking, depth=25, progress=False,
                                                               batch_size=512))
    for name, values in seconds.items():
        print(f"evaluation, {name}: {documents / median(values):.1f} docs/s ({documents} documents, batch 512, merged)")
