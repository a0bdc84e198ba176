import os

# Before torch starts its OpenMP threads: on a CPU shared with other processes, spinning
# worker threads (the OpenMP default) lose most of their time to each other; the "threads"
# section of the table measures both policies (docs/performance.md). Set OMP_WAIT_POLICY
# yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from urlkit.bench.cli import main  # noqa: E402

raise SystemExit(main())
