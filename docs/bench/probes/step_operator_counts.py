"""Where a 1+4 training step goes, by operator: calls and self CPU time a step (torch.profiler
over 3 steps after 8 of warm-up), sorted by time and by count (docs/performance.md, session 23).

    python docs/bench/probes/step_operator_counts.py
"""

from __future__ import annotations

import time

from _common import default_steps
from torch.profiler import ProfilerActivity, profile

step, batches = default_steps(11)
for batch in batches[:4]:
    step(batch)
start = time.perf_counter()
for batch in batches[4:8]:
    step(batch)
print(f"{(time.perf_counter() - start) / 4:.3f} s a step (4 steps, not profiled)")
with profile(activities=[ProfilerActivity.CPU]) as profiled:
    for batch in batches[8:11]:
        step(batch)
events = profiled.key_averages()
print(f"{sum(e.count for e in events) / 3:.0f} operator calls a step, "
      f"{sum(e.self_cpu_time_total for e in events) / 3000:.0f} ms of self CPU time a step (profiled)")
for title, key in (("by self time", lambda e: -e.self_cpu_time_total), ("by calls", lambda e: -e.count)):
    print(f"-- {title}: calls a step, self ms a step")
    for event in sorted(events, key=key)[:20]:
        print(f"{event.key:60s} {event.count / 3:8.0f} {event.self_cpu_time_total / 3000:8.1f}")
