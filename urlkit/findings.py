"""The paper's qualitative findings, checked by code on a set of runs: one verdict each.

    python -m urlkit.findings outputs/studies          # or wandb:<entity>/<project>

Each finding reads the runs of its experiment (``experiment_name``; conf/experiment/) and
says ``holds``, ``fails`` or ``not run`` (with the settings it misses), followed by the
numbers it compared. Final metrics are compared as means over seeds, in points (x100); no
significance test: with three seeds a verdict is a direction, and the numbers say how close.
Claims are those of Dai et al. (2025), arXiv 2510.14824 (see urlkit/paper/README.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from urlkit.analysis import AnalysisError, Runs, load_runs, seed_summary

HOLDS, FAILS, NOT_RUN = "holds", "fails", "not run"
DEFAULT_METRIC = "test/ndcg@10"


@dataclass(frozen=True)
class Verdict:
    finding: str
    claim: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.finding}: {self.claim}: {self.status} ({self.detail})"


class Cells:
    """Mean, sd and n of the metric per setting (``by`` columns) over the selected runs."""

    def __init__(self, runs: Runs, by: Sequence[str], metric: str):
        self.by = list(by)
        if len(runs) and all(c in runs.config for c in self.by):
            table = seed_summary(runs, self.by, metric)
            table = table[table["n"] > 0]
        else:
            table = pd.DataFrame(columns=[*self.by, "n", "mean", "std"])
        self.rows = {tuple(r[c] for c in self.by): r for _, r in table.iterrows()}

    def missing(self, keys: Sequence[tuple]) -> list[str]:
        return [self.name(k) for k in keys if k not in self.rows]

    def mean(self, key: tuple) -> float:
        return float(self.rows[key]["mean"])

    def name(self, key: tuple) -> str:
        return ",".join(f"{c}={v}" for c, v in zip(self.by, key, strict=True))

    def show(self, key: tuple) -> str:
        row = self.rows[key]
        sd = "" if pd.isna(row["std"]) else f" +- {row['std']:.2f}"
        return f"{self.name(key)}: {row['mean']:.2f}{sd} (n={int(row['n'])})"


def _status(ok: bool) -> str:
    return HOLDS if ok else FAILS


def _compare(cells: Cells, keys: list[tuple], test: Callable[[Cells], bool]) -> tuple[str, str]:
    missing = cells.missing(keys)
    if missing:
        return NOT_RUN, "missing " + "; ".join(missing)
    return _status(test(cells)), "; ".join(cells.show(k) for k in keys)


# -- findings on final metrics ------------------------------------------------------------


def table1(runs: Runs, metric: str) -> tuple[str, str]:
    cells = Cells(runs, ["weight.name"], metric)
    return _compare(cells, [("sft",), ("cl",)], lambda c: c.mean(("sft",)) > c.mean(("cl",)))


def table2(runs: Runs, metric: str) -> tuple[str, str]:
    keys = [("base",), ("tau_mask",), ("cl",), ("base*sft",)]
    cells = Cells(runs, ["weight.name"], metric)

    def test(c: Cells) -> bool:
        means = {k: c.mean(k) for k in keys}
        return all(means[k] > means[("base",)] for k in keys[1:]) and max(means, key=means.get) == (
            "base*sft",
        )

    return _compare(cells, keys, test)


def table3(runs: Runs, metric: str) -> tuple[str, str]:
    keys = [("sft", "sft"), ("sft", "rand"), ("cl", "cl"), ("cl", "rand")]
    cells = Cells(runs, ["weight.name", "direction.name"], metric)
    return _compare(
        cells,
        keys,
        lambda c: c.mean(keys[1]) < c.mean(keys[0]) and c.mean(keys[3]) > c.mean(keys[2]),
    )


def table5(runs: Runs, metric: str) -> tuple[str, str]:
    cells = Cells(runs, ["weight.dtype"], metric)
    keys = [("float16",), ("float32",)]
    return _compare(cells, keys, lambda c: c.mean(keys[1]) > c.mean(keys[0]))


def table6(runs: Runs, metric: str) -> tuple[str, str]:
    cells = Cells(runs, ["weight.tau"], metric)
    keys = [(1e-2,), (1e-3,), (1e-4,)]
    return _compare(cells, keys, lambda c: max(keys, key=c.mean) == (1e-3,))


def table15(runs: Runs, metric: str) -> tuple[str, str]:
    keys = [("sft", False), ("sft", True), ("cl", False), ("cl", True)]
    cells = Cells(runs, ["objective", "head.trainable"], metric)

    def test(c: Cells) -> bool:
        return c.mean(keys[3]) - c.mean(keys[2]) > c.mean(keys[1]) - c.mean(keys[0])

    return _compare(cells, keys, test)


def figure4(runs: Runs, metric: str) -> tuple[str, str]:
    cells = Cells(runs, ["head.num_tokens"], metric)
    keys = sorted(cells.rows)
    if len(keys) < 2:
        return NOT_RUN, f"{len(keys)} token-set size(s) run; need at least 2"
    means = [cells.mean(k) for k in keys]
    sds = [s for s in (cells.rows[k]["std"] for k in keys) if not pd.isna(s)]
    allowed = max(1.0, 2 * (sum(sds) / len(sds))) if sds else 1.0
    spread = max(means) - min(means)
    detail = (
        f"spread {spread:.2f} points vs allowed {allowed:.2f} (max(1, 2 x mean sd)); "
        + "; ".join(cells.show(k) for k in keys)
    )
    return _status(spread <= allowed), detail


def figure5(runs: Runs, metric: str) -> tuple[str, str]:
    cells = Cells(runs, ["objective", "data.n_negatives"], metric)
    counts = sorted({k[1] for k in cells.rows})
    if len(counts) < 2:
        return NOT_RUN, f"negatives per query run: {counts}; need at least 2 counts"
    keys = [(o, n) for o in ("sft", "cl") for n in counts]
    missing = cells.missing(keys)
    if missing:
        return NOT_RUN, "missing " + "; ".join(missing)
    lo, hi = counts[0], counts[-1]
    more_helps = all(cells.mean((o, hi)) > cells.mean((o, lo)) for o in ("sft", "cl"))
    sft_wins = all(cells.mean(("sft", n)) > cells.mean(("cl", n)) for n in counts)
    detail = (
        f"more negatives help: {more_helps}; SFT beats CL at every count: {sft_wins}; "
        + "; ".join(cells.show(k) for k in keys)
    )
    return _status(more_helps and sft_wins), detail


# -- findings on the per-step history -----------------------------------------------------


def figure2(runs: Runs, metric: str) -> tuple[str, str]:
    parts, ok = [], True
    for objective, loss in (("sft", "loss_sft_native"), ("cl", "loss_infonce_native")):
        steps = runs.select(objective=objective).steps(loss)
        if steps.empty:
            parts.append(f"no URL({objective},{objective}) runs")
            ok = False
            continue
        curve = steps.groupby("step")["value"].mean()
        k = max(1, len(curve) // 10)
        first, last = curve.iloc[:k].mean(), curve.iloc[-k:].mean()
        ok &= last < first
        parts.append(
            f"URL({objective},{objective}) {loss}: first {k} steps {first:.3f} -> last {k} steps {last:.3f}"
        )
    if all(p.startswith("no ") for p in parts):
        return NOT_RUN, "; ".join(parts)
    return _status(ok), "; ".join(parts)


def figure3(runs: Runs, metric: str) -> tuple[str, str]:
    sides = []
    for side in ("pos", "neg"):
        curves = {}
        for family in ("sft", "cl"):
            steps = runs.select(objective=family).steps(f"w_{side}_mean")
            if steps.empty:
                return NOT_RUN, f"no URL({family},{family}) runs"
            curves[family] = steps.groupby("step")["value"].mean()
        common = curves["sft"].index.intersection(curves["cl"].index)
        below = float((curves["cl"][common] < curves["sft"][common]).mean())
        sides.append((side, below, curves["cl"][common].mean(), curves["sft"][common].mean()))
    detail = "; ".join(
        f"W{'+' if s == 'pos' else '-'}: cl {c:.3f} vs sft {f:.3f} on average, cl below at {b:.0%} of steps"
        for s, b, c, f in sides
    )
    return _status(all(b >= 0.9 for _, b, _, _ in sides)), detail


@dataclass(frozen=True)
class Finding:
    name: str
    claim: str
    experiments: tuple[str, ...]
    check: Callable[[Runs, str], tuple[str, str]]


FINDINGS = [
    Finding("Figure 2", "URL(sft,sft) lowers the native SFT loss and URL(cl,cl) the native InfoNCE loss",
            ("figure3_weights", "table1_weight_direction"), figure2),
    Finding("Figure 3", "mean W_cl < mean W_sft over training, for positives and for negatives",
            ("figure3_weights", "table1_weight_direction"), figure3),
    Finding("Table 1", "the SFT weight beats the CL weight (mean over seeds and directions)",
            ("table1_weight_direction",), table1),
    Finding("Table 2", "every weight property beats the base weight, base*sft is best",
            ("table2_weight_properties",), table2),
    Finding("Table 3", "a random direction hurts the SFT weight and helps the CL weight",
            ("table3_random_direction",), table3),
    Finding("Table 5", "CL with float32 weights beats float16 weights", ("table5_precision",), table5),
    Finding("Appendix B.2", "tau = 1e-3 is the best tau-mask threshold", ("table6_tau",), table6),
    Finding("Table 15", "a trainable LM head helps CL more than SFT", ("table15_lm_head",), table15),
    Finding("Figure 4", "the size of the SFT token set changes little", ("figure4_tokens",), figure4),
    Finding("Figure 5", "more negatives help SFT and CL, SFT beats CL at every count",
            ("figure5_negatives",), figure5),
]  # fmt: skip


def check_findings(
    runs: Runs, metric: str = DEFAULT_METRIC, only: Sequence[str] | None = None
) -> list[Verdict]:
    """A verdict per finding (or per finding named in ``only``, e.g. ``["Figure 3"]``)."""
    verdicts = []
    for finding in FINDINGS:
        if only and finding.name not in only:
            continue
        selected = runs.select(experiment_name=list(finding.experiments))
        if len(selected) == 0:
            status, detail = NOT_RUN, f"no runs of experiment {' or '.join(finding.experiments)}"
        else:
            status, detail = finding.check(selected, metric)
        verdicts.append(Verdict(finding.name, finding.claim, status, detail))
    return verdicts


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
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.source)
    except AnalysisError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"{len(runs)} runs from {args.source}; metric {args.metric} (x100, mean over seeds)")
    for verdict in check_findings(runs, args.metric):
        print(f"- {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
