"""Seconds, minor page faults and system time per training step, to compare glibc malloc
settings in fresh processes, e.g. MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184
MALLOC_TOP_PAD_=536870912 against none (docs/performance.md, session 5).

    python docs/bench/probes/page_faults.py
"""

from __future__ import annotations

import os
import resource
import time

from _common import default_steps

step, batches = default_steps(12)
step(batches[0])
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for batch in batches[1:]:
    step(batch)
after, n = resource.getrusage(resource.RUSAGE_SELF), len(batches) - 1
print(f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')}: {(time.perf_counter() - start) / n:.3f} s a step, "
      f"{(after.ru_minflt - before.ru_minflt) // n} minor faults, system {(after.ru_stime - before.ru_stime) / n:.3f} s, "
      f"user {(after.ru_utime - before.ru_utime) / n:.3f} s a step")
