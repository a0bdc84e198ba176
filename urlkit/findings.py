"""Print the paper's claims checked on a set of runs: ``python -m urlkit.findings <runs>``.

    python -m urlkit.findings outputs/studies/laptop          # or wandb:<entity>/<project>
    python -m urlkit.findings outputs/studies/laptop --margin 1.0 --metric test/mrr@10

One line per claim: verdict (holds / fails / inconclusive / not run), effect, 95% interval,
the smallest effect these runs could detect, the paper's effect, and how many queries and
seeds it rests on. The library is urlkit/analysis/findings.py (the claims, the rules) and
urlkit/analysis/stats.py (the paired intervals over seeds and queries); this file is only the CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from urlkit.analysis import AnalysisError, load_runs
from urlkit.analysis.findings import (
    DEFAULT_MARGIN,
    DEFAULT_METRIC,
    EQUIVALENT,
    FAILS,
    FINDINGS,
    GREATER,
    HOLDS,
    INCONCLUSIVE,
    MIXED,
    NOT_RUN,
    Finding,
    Verdict,
    check_findings,
)

__all__ = [
    "DEFAULT_MARGIN", "DEFAULT_METRIC", "EQUIVALENT", "FAILS", "FINDINGS", "GREATER", "HOLDS",
    "INCONCLUSIVE", "MIXED", "NOT_RUN", "Finding", "Verdict", "check_findings", "main",
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m urlkit.findings", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "source", help="a folder of run directories, wandb:<entity>/<project> or wandb-sweep:..."
    )
    parser.add_argument(
        "--metric", default=DEFAULT_METRIC, help="final metric compared (default: %(default)s)"
    )
    parser.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN,
        help="equivalence margin in points for 'same'/'unchanged' claims (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--only", nargs="*", help="findings to check (e.g. 'Table 1' 'Figure 3')")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.source)
    except AnalysisError as err:
        parser.exit(2, f"error: {err}\n")
    # a misspelt metric or claim would read as "not run" for every claim, or print none
    known = runs.metric_names
    if args.metric not in known:
        parser.exit(2, f"error: no run in {args.source} has the final metric {args.metric!r} "
                       f"(final metrics: {', '.join(known) or 'none'})\n")  # fmt: skip
    names = [f.name for f in FINDINGS]
    unknown = [n for n in args.only or [] if not any(m == n or m.startswith(n + " ") for m in names)]
    if unknown:
        parser.exit(2, f"error: --only {', '.join(map(repr, unknown))}: no such finding; findings: "
                       f"{', '.join(names)}\n")  # fmt: skip
    print(
        f"{len(runs)} runs from {args.source}; {args.metric} x100 per query, "
        "95% paired t intervals over seeds and queries (steps: seeds)"
    )
    for verdict in check_findings(runs, args.metric, only=args.only, margin=args.margin):
        print(f"- {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
