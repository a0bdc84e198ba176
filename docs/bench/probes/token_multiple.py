"""Training steps over new groups with each pass's rows taken as they come (``token_multiple=1``)
or rounded up to a multiple of 8 (the default of a training pass on a CPU), each variant in a
process of its own, since oneDNN's kernel cache lives per process; the processes alternate
(docs/performance.md, session 12). A child also counts oneDNN's kernel builds (cache misses)
and their milliseconds over its last steps.

    python docs/bench/probes/token_multiple.py [steps [runs]]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

WATCHED = 5  # last steps of a child run under oneDNN's verbose mode (kernel builds counted)


def child(multiple: int, steps: int) -> None:
    import torch
    from _common import default_steps

    stepper, batches = default_steps(steps + WATCHED)
    stepper.reranker = stepper.reranker.with_options(token_multiple=multiple)
    seconds = []
    for batch in batches[:steps]:
        start = time.perf_counter()
        stepper(batch)
        seconds.append(time.perf_counter() - start)
    print(f"RESULT {statistics.mean(seconds[10:]):.4f} {statistics.median(seconds[10:]):.4f}", flush=True)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        for batch in batches[steps:]:
            stepper(batch)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    means: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(runs):
        for multiple in means:
            out = subprocess.run([sys.executable, __file__, "--child", str(multiple), str(steps)], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
            mean, median = (float(x) for x in next(line for line in out if line.startswith("RESULT")).split()[1:])
            misses = [float(line.rsplit(",", 1)[1]) for line in out if "create:cache_miss" in line]
            means[multiple].append(mean)
            print(f"token_multiple={multiple}: steps 11-{steps} mean {mean:.4f} s, median {median:.4f} s; last {WATCHED} "
                  f"steps: {len(misses)} oneDNN kernel builds, {sum(misses):.1f} ms", flush=True)
    print(f"mean step, rounded / as they come: {statistics.mean(means[8]) / statistics.mean(means[1]):.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
