"""Does the URL loss (with its step telemetry) cost a training step anything against the
native SFT loss? Paired per step: each batch runs both steps back to back, the order swapped
every other batch; the median of the per-batch ratios and its quartiles.

    python docs/bench/probes/url_vs_sft_step.py [batches=12] [rounds=2]

Session 9 (Intel Xeon with AMX, 2 cores, bf16 frozen weights, 1+4 groups): url 584 ms, sft
621 ms a step; url/sft median 1.010, quartiles 0.950-1.081 (24 pairs): no measurable cost.
"""

import sys
import time
from statistics import median

from _common import default_steps

from urlkit.bench.training import Stepper
from urlkit.bench.workload import compose_config

batches_n = int(sys.argv[1]) if len(sys.argv) > 1 else 12
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
url, batches = default_steps(batches_n)
arms = {"url": url, "sft": Stepper(url.reranker, compose_config("default"), loss="sft")}


def step(arm: str, batch: dict) -> float:
    start = time.perf_counter()
    arms[arm](batch)
    return time.perf_counter() - start


for arm in arms:  # warm-up
    for batch in batches[:3]:
        step(arm, batch)
times = {arm: [] for arm in arms}
for r in range(rounds):
    for i, batch in enumerate(batches):
        for arm in list(arms) if (i + r) % 2 == 0 else list(arms)[::-1]:
            times[arm].append(step(arm, batch))
ratios = sorted(u / s for u, s in zip(times["url"], times["sft"], strict=True))
print(f"url {median(times['url']) * 1e3:.0f} ms, sft {median(times['sft']) * 1e3:.0f} ms a step (medians of "
      f"{len(ratios)}); url/sft per step: median {median(ratios):.3f}, quartiles "
      f"{ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}")
