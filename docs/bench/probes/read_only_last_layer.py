"""The last layer's output half (o, MLP, final norm) for the scored tokens only
(``ScoringOptions.read_only_last_layer``, the default) against every token's, on the default
experiment's model, in one process, alternated pair by pair (docs/performance.md, session 13):
evaluation calls (rerank_split of the first test queries, batch 512, as the default scores) and
1+4 training steps, each new group stepped by both variants; the variants' scores are compared.

    python docs/bench/probes/read_only_last_layer.py [pairs [queries]]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from _common import adapted_default_model, default_steps

from urlkit.evaluation.rerank import rerank_split


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    queries = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    built, data, split = adapted_default_model(queries)
    variants = {flag: built.reranker.with_options(read_only_last_layer=flag) for flag in (True, False)}
    scores = {flag: rerank_split(r, built.renderer, split, data.test_ranking, batch_size=512, progress=False)
              for flag, r in variants.items()}  # warm-up (compiles the layers once) and the scores
    gap = max(abs(scores[True][q][d] - scores[False][q][d]) for q in scores[True] for d in scores[True][q])
    print(f"evaluation: {sum(map(len, scores[True].values()))} documents, largest score difference {gap:.2e}")
    times: dict[bool, list[float]] = {True: [], False: []}
    for index in range(pairs):
        for flag in ((True, False) if index % 2 == 0 else (False, True)):
            times[flag].append(seconds(lambda f=flag: rerank_split(variants[f], built.renderer, split, data.test_ranking,
                                                                     batch_size=512, progress=False)))
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    print(f"evaluation call: read-only {statistics.median(times[True]):.3f} s, every token {statistics.median(times[False]):.3f} s; "
          f"paired ratio median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}, {pairs} pairs)")
    stepper, batches = default_steps(4 * pairs + 2)
    steppers = {flag: stepper.reranker.with_options(read_only_last_layer=flag) for flag in (True, False)}
    step_times: dict[bool, list[float]] = {True: [], False: []}
    for index, batch in enumerate(batches):  # each new group stepped by both, the order alternated
        for flag in ((True, False) if index % 2 == 0 else (False, True)):
            stepper.reranker = steppers[flag]
            elapsed = seconds(lambda b=batch: stepper(b))
            if index >= 2:
                step_times[flag].append(elapsed)
    ratios = [a / b for a, b in zip(step_times[True], step_times[False], strict=True)]
    print(f"1+4 training step: read-only {statistics.mean(step_times[True]):.4f} s, every token "
          f"{statistics.mean(step_times[False]):.4f} s (means over the same {len(ratios)} new groups); paired ratio "
          f"median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
