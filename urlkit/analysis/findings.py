"""Every claim of the paper's section 4 and Appendices B and E, checked on a set of runs.

A :class:`Finding` names the runs it needs (*arms*: a config selection within its
experiments, e.g. ``weight.name=sft, direction.name=cl``) and a linear contrast of the arms
whose sign is the claim (``effect > 0`` is what the paper says). On the runs at hand it gets:

- the effect: the contrast of the arms' means over seeds and test queries, in points (per-query
  metric x 100; final metric x 100 when a source keeps no per-query file), or in the logged
  unit for a per-step column (Figure 3's weights: mean over steps and seeds);
- its 95% interval and the smallest effect the runs could detect (80% power), a paired t
  interval over seeds and test queries (steps: seeds alone) of :mod:`urlkit.analysis.stats`;
- a verdict. Directional claims: ``holds`` (interval above 0), ``fails`` (below 0),
  ``inconclusive`` (it spans 0). Equivalence claims ("indistinguishable", "changes little",
  "unaffected", margin ``+-margin`` points, default 0.5): ``holds`` when the interval lies
  inside the margin, ``fails`` when it lies wholly outside, else ``inconclusive``.
  ``not run`` names the grid points (arms) with no run. One seed in an arm gives no verdict
  (``inconclusive``): a claim about a training method needs its training noise.

No correction for the number of claims is made: with ~25 claims at 95%, about one interval in
twenty misses by chance; read a lone surprising verdict with that in mind. Claims are those
of Dai et al. (2025), arXiv 2510.14824; the paper's effect (MRB points) is printed beside each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from urlkit.analysis.runset import Runs, describe_differences, seed_labels, setup_differences
from urlkit.analysis.stats import ContrastError, Estimate, contrast

HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = "holds", "fails", "inconclusive", "not run"
# the runs differ in what is not the claim's contrast (runset.setup_differences): no comparison
MIXED = "mixed setups"
GREATER, EQUIVALENT = "greater", "equivalent"
DEFAULT_METRIC = "test/ndcg@10"
# points of the test metric: the paper's directional effects run from 0.21 (Table 1, sft vs cl
# direction under the sft weight) to 8.7; its "unchanged" SFT head (Table 15) moved 0.03
DEFAULT_MARGIN = 0.5


@dataclass(frozen=True)
class Finding:
    name: str
    claim: str
    experiments: tuple[str, ...]
    arms: Mapping[str, Mapping[str, object]]  # arm label -> config column -> value
    weights: Mapping[str, float]  # the contrast: arm label -> coefficient; effect > 0 = the claim
    kind: str = GREATER
    column: str | None = None  # a per-step history column; None: the final test metric
    paper: float | None = None  # the paper's effect (MRB points), None where it gives no number


@dataclass(frozen=True)
class Verdict:
    finding: str
    claim: str
    status: str
    detail: str
    estimate: Estimate | None = field(default=None, compare=False)
    paper: float | None = None

    @property
    def effect(self) -> float:
        return self.estimate.effect if self.estimate else float("nan")

    def __str__(self) -> str:
        return f"{self.finding}: {self.claim}: {self.status} ({self.detail})"


def _wd(weight: str, direction: str) -> dict:
    # URL's runs: a native loss with the same pair (Figure 2's) is the same gradient run twice
    return {"weight.name": weight, "direction.name": direction, "loss": "url"}


# Table 1's diagonal (URL(sft,sft), URL(cl,cl)) is figure3_weights' grid in the same probing setting
T1 = ("table1_weight_direction", "figure3_weights")
# the experiments whose runs make a paper table (the notebooks' tables read the same as the findings)
TABLE_EXPERIMENTS = {"table1_weight_direction": T1}
T2, T3 = ("table2_weight_properties",), ("table3_random_direction",)
WEIGHT_RUNS = ("figure3_weights", "figure2_native", "table1_weight_direction")
TABLE1_ARMS = {"sft,sft": _wd("sft", "sft"), "sft,cl": _wd("sft", "cl"),
               "cl,sft": _wd("cl", "sft"), "cl,cl": _wd("cl", "cl")}  # fmt: skip
TABLE2_ARMS = {w: _wd(w, "sft") for w in ("base", "tau_mask", "cl", "base*sft")}
TABLE3_ARMS = {"sft,sft": _wd("sft", "sft"), "sft,rand": _wd("sft", "rand"),
               "cl,cl": _wd("cl", "cl"), "cl,rand": _wd("cl", "rand")}  # fmt: skip
TAU_ARMS = {f"tau={t}": {"weight.tau": v} for t, v in (("1e-2", 1e-2), ("1e-3", 1e-3), ("1e-4", 1e-4))}
HEAD_ARMS = {f"{o},{'trainable' if t else 'frozen'}": {"objective": o, "head.trainable": t}
             for o in ("sft", "cl") for t in (False, True)}  # fmt: skip
NEGATIVES = (1, 2, 4, 8, 16)
NEG_ARMS = {f"{o},N={n}": {"objective": o, "data.n_negatives": n} for o in ("sft", "cl") for n in NEGATIVES}


def _sub(arms: Mapping[str, Mapping], keys: Sequence[str]) -> dict:
    return {k: arms[k] for k in keys}


FINDINGS = [
    Finding("Figure 2 (SFT)", "URL(sft,sft) and the native SFT loss reach the same test metric",
            WEIGHT_RUNS, {"url": {"objective": "sft"}, "native": {"objective": "native_sft"}},
            {"url": 1, "native": -1}, EQUIVALENT, paper=0.0),
    Finding("Figure 2 (CL)", "URL(cl,cl) and the native InfoNCE loss reach the same test metric",
            WEIGHT_RUNS, {"url": {"objective": "cl"}, "native": {"objective": "native_infonce"}},
            {"url": 1, "native": -1}, EQUIVALENT, paper=0.0),
    Finding("Figure 3 (W+)", "over training, the mean W+ of SFT is above that of CL",
            WEIGHT_RUNS, {"sft": {"objective": "sft"}, "cl": {"objective": "cl"}},
            {"sft": 1, "cl": -1}, column="w_pos_mean"),
    Finding("Figure 3 (W-)", "over training, the mean W- of SFT is above that of CL",
            WEIGHT_RUNS, {"sft": {"objective": "sft"}, "cl": {"objective": "cl"}},
            {"sft": 1, "cl": -1}, column="w_neg_mean"),
    Finding("Table 1 (Delta_W)", "the sft weight beats the cl weight (mean over both directions)",
            T1, TABLE1_ARMS, {"sft,sft": .5, "sft,cl": .5, "cl,sft": -.5, "cl,cl": -.5}, paper=1.29),
    Finding("Table 1 (Delta_D)", "the sft direction beats the cl direction (mean over both weights)",
            T1, TABLE1_ARMS, {"sft,sft": .5, "cl,sft": .5, "sft,cl": -.5, "cl,cl": -.5}, paper=0.40),
    Finding("Table 1 (Delta_W > Delta_D)", "the weight matters more than the direction: "
            "Delta_W - Delta_D = URL(sft,cl) - URL(cl,sft) > 0",
            T1, _sub(TABLE1_ARMS, ["sft,cl", "cl,sft"]), {"sft,cl": 1, "cl,sft": -1}, paper=0.89),
    Finding("Table 1 (diagonal)", "SFT beats CL: URL(sft,sft) > URL(cl,cl)",
            T1, _sub(TABLE1_ARMS, ["sft,sft", "cl,cl"]), {"sft,sft": 1, "cl,cl": -1}, paper=1.69),
    Finding("Table 2 (tau mask)", "the tau mask improves the base weight",
            T2, _sub(TABLE2_ARMS, ["tau_mask", "base"]), {"tau_mask": 1, "base": -1}, paper=7.10),
    Finding("Table 2 (cl weight)", "the cl weight (with the sft direction) beats the base weight",
            T2, _sub(TABLE2_ARMS, ["cl", "base"]), {"cl": 1, "base": -1}, paper=6.76),
    Finding("Table 2 (base*sft vs base)", "multiplying by the sft weight improves the base weight",
            T2, _sub(TABLE2_ARMS, ["base*sft", "base"]), {"base*sft": 1, "base": -1}, paper=8.72),
    Finding("Table 2 (base*sft vs tau mask)", "base*sft beats base + tau mask",
            T2, _sub(TABLE2_ARMS, ["base*sft", "tau_mask"]), {"base*sft": 1, "tau_mask": -1}, paper=1.62),
    Finding("Table 2 (base*sft vs cl)", "base*sft beats the cl weight",
            T2, _sub(TABLE2_ARMS, ["base*sft", "cl"]), {"base*sft": 1, "cl": -1}, paper=1.96),
    Finding("Table 3 (SFT + random)", "a random direction hurts the sft weight",
            T3, _sub(TABLE3_ARMS, ["sft,sft", "sft,rand"]), {"sft,sft": 1, "sft,rand": -1}, paper=1.34),
    Finding("Table 3 (CL + random)", "a random direction helps the cl weight",
            T3, _sub(TABLE3_ARMS, ["cl,rand", "cl,cl"]), {"cl,rand": 1, "cl,cl": -1}, paper=1.32),
    Finding("Table 3 (CL + random < SFT)", "the cl weight with a random direction still trails SFT",
            T3, _sub(TABLE3_ARMS, ["sft,sft", "cl,rand"]), {"sft,sft": 1, "cl,rand": -1}, paper=0.37),
    Finding("Table 5", "CL with its weight in float32 beats float16",
            ("table5_precision",), {"fp32": {"weight.dtype": "float32"}, "fp16": {"weight.dtype": "float16"}},
            {"fp32": 1, "fp16": -1}, paper=0.31),
    Finding("Appendix B.2 (1e-3 vs 1e-2)", "tau = 1e-3 beats tau = 1e-2",
            ("table6_tau",), _sub(TAU_ARMS, ["tau=1e-3", "tau=1e-2"]), {"tau=1e-3": 1, "tau=1e-2": -1}, paper=1.50),
    Finding("Appendix B.2 (1e-3 vs 1e-4)", "tau = 1e-3 beats tau = 1e-4",
            ("table6_tau",), _sub(TAU_ARMS, ["tau=1e-3", "tau=1e-4"]), {"tau=1e-3": 1, "tau=1e-4": -1}, paper=0.68),
    Finding("Table 15 (CL)", "a trainable LM head helps CL",
            ("table15_lm_head",), _sub(HEAD_ARMS, ["cl,trainable", "cl,frozen"]),
            {"cl,trainable": 1, "cl,frozen": -1}, paper=1.25),
    Finding("Table 15 (SFT)", "a trainable LM head leaves SFT unchanged",
            ("table15_lm_head",), _sub(HEAD_ARMS, ["sft,trainable", "sft,frozen"]),
            {"sft,trainable": 1, "sft,frozen": -1}, EQUIVALENT, paper=-0.03),
    Finding("Table 15 (CL gains more)", "a trainable LM head helps CL more than SFT",
            ("table15_lm_head",), HEAD_ARMS,
            {"cl,trainable": 1, "cl,frozen": -1, "sft,trainable": -1, "sft,frozen": 1}, paper=1.28),
    *[Finding(f"Figure 4 ({k} vs 2 tokens)", f"an SFT token set of {k} tokens scores as 2 tokens do",
              ("figure4_tokens",), {f"K={k}": {"head.num_tokens": k}, "K=2": {"head.num_tokens": 2}},
              {f"K={k}": 1, "K=2": -1}, EQUIVALENT) for k in (4, 8, 16)],
    *[Finding(f"Figure 5 ({o.upper()} 16 vs 1)", f"16 negatives per query beat 1 for {o.upper()}",
              ("figure5_negatives",), _sub(NEG_ARMS, [f"{o},N=16", f"{o},N=1"]),
              {f"{o},N=16": 1, f"{o},N=1": -1}) for o in ("sft", "cl")],
    Finding("Figure 5 (SFT > CL)", "SFT beats CL (mean over 1, 2, 4, 8, 16 negatives)",
            ("figure5_negatives",), NEG_ARMS,
            {f"{o},N={n}": (1 if o == "sft" else -1) / len(NEGATIVES) for o in ("sft", "cl") for n in NEGATIVES}),
]  # fmt: skip


def arm_values(arm: Runs, column: str | None, metric: str, per_query: bool) -> pd.DataFrame:
    """(seed, unit, value) of one arm: per-query or final metric x 100, or a history column."""
    seed_of = dict(zip(arm.config["run_id"], seed_labels(arm.config), strict=True))
    if column is not None:
        rows = arm.history[arm.history["metric"] == column]
        frame = pd.DataFrame({"run_id": rows["run_id"], "unit": rows["step"], "value": rows["value"]})
    elif per_query:
        short = metric.rsplit("/", 1)[-1]
        rows = arm.per_query[arm.per_query["metric"] == short]
        frame = pd.DataFrame(
            {"run_id": rows["run_id"], "unit": rows["query_id"], "value": 100 * rows["value"]}
        )
    else:
        final = arm.final(metric)
        frame = pd.DataFrame({"run_id": final["run_id"], "unit": "all", "value": 100 * final[metric]})
    frame["seed"] = frame["run_id"].map(seed_of)
    return frame.dropna(subset=["value"])[["seed", "unit", "value"]]


def _complete(runs: Runs, finding: Finding, metric: str) -> Runs:
    """The runs a finding may use: finished ones with what it reads."""
    runs = runs.complete()
    if finding.column is None:
        final = runs.final(metric)
        runs = runs.subset(final.loc[final[metric].notna(), "run_id"])
    return runs


def _has_per_query(arm: Runs, metric: str) -> bool:
    # the per-query files are the trained reranker's (test/<m>); the first stage's final metric
    # (bm25/test/<m>) is not their average, so it is compared as a final metric
    if not metric.startswith("test/"):
        return False
    short = metric.rsplit("/", 1)[-1]
    rows = arm.per_query[arm.per_query["metric"] == short]
    return len(arm) > 0 and set(arm.ids) <= set(rows["run_id"])


def check(finding: Finding, runs: Runs, metric: str = DEFAULT_METRIC, margin: float = DEFAULT_MARGIN) -> Verdict:
    """The verdict of one finding on ``runs`` (already narrowed to any selection)."""
    # a run a study shared among experiments (urlkit/study/plan.py) is a run of each of them
    selected = _complete(runs.of_experiments(finding.experiments), finding, metric)
    arms = {label: selected.select(where) for label, where in finding.arms.items()}

    def verdict(status: str, detail: str, estimate: Estimate | None = None) -> Verdict:
        return Verdict(finding.name, finding.claim, status, detail, estimate, finding.paper)

    missing = [f"{label} ({_where(finding.arms[label])})" for label, arm in arms.items() if len(arm) == 0]
    if missing:
        where = " or ".join(finding.experiments)
        return verdict(NOT_RUN, f"no run of {'; '.join(missing)} in experiment {where}")
    varied = {key for where in finding.arms.values() for key in where}
    # e.g. laptop and paper runs, a dev-scored run, another number of negatives in one arm
    differences = setup_differences(pd.concat([arm.config for arm in arms.values()]), varied)
    if differences:
        return verdict(MIXED, f"{describe_differences(differences)}; select one setup, "
                              "e.g. load_runs(...).select(...)")  # fmt: skip
    per_query = finding.column is None and all(_has_per_query(a, metric) for a in arms.values())
    values = {label: arm_values(arm, finding.column, metric, per_query) for label, arm in arms.items()}
    empty = [label for label, v in values.items() if v.empty]
    if empty:
        what = finding.column or metric
        return verdict(NOT_RUN, f"no {what} in the runs of {', '.join(empty)} (unfinished?)")
    try:
        # a curve's steps are not a sample: its uncertainty is the seeds' (urlkit.analysis.stats)
        estimate = contrast(values, finding.weights, resample_units=finding.column is None)
    except ContrastError as err:
        return verdict(NOT_RUN, str(err))
    status = _status(estimate, finding.kind, margin)
    return verdict(status, _describe(finding, estimate, per_query, margin), estimate)


def _status(estimate: Estimate, kind: str, margin: float) -> str:
    # one seed in an arm: the training noise is unknown, and a claim about a training method
    # cannot rest on one run of it (the interval then covers the test queries' noise only)
    if not estimate.has_interval or not estimate.seeds_resampled:
        return INCONCLUSIVE
    low, high = estimate.low, estimate.high
    if kind == EQUIVALENT:
        if -margin < low and high < margin:
            return HOLDS
        return FAILS if low > margin or high < -margin else INCONCLUSIVE
    return HOLDS if low > 0 else FAILS if high < 0 else INCONCLUSIVE


def _describe(finding: Finding, e: Estimate, per_query: bool, margin: float) -> str:
    digits = 3 if finding.column else 2
    unit = "" if finding.column else " pts"

    def f(x: float) -> str:
        return "n/a" if np.isnan(x) else f"{x:+.{digits}f}"

    seeds = sorted(set(e.seeds.values()))
    seeds_text = "/".join(str(s) for s in seeds) + f" seed{'s' if seeds != [1] else ''}"
    units = f"{e.units} {'steps' if finding.column else 'queries' if per_query else 'final metric'}"
    parts = [
        f"effect {f(e.effect)}{unit}",
        f"95% interval [{f(e.low)}, {f(e.high)}]",
        f"detectable {'n/a' if np.isnan(e.detectable) else f'{e.detectable:.{digits}f}'}",
    ]
    if finding.kind == EQUIVALENT:
        parts.append(f"margin +-{margin:g}")
    if finding.paper is not None:
        parts.append(f"paper {finding.paper:+.2f}")
    parts.append(f"{units} x {seeds_text}{' paired' if e.seeds_paired and max(seeds) > 1 else ''}")
    if not e.seeds_resampled:
        parts.append("1 seed in an arm: seed noise not in the interval, so no verdict")
    return "; ".join(parts)


def _where(conditions: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in conditions.items())


def check_findings(
    runs: Runs,
    metric: str = DEFAULT_METRIC,
    only: Sequence[str] | None = None,
    margin: float = DEFAULT_MARGIN,
) -> list[Verdict]:
    """A verdict per finding; ``only`` keeps findings named so or starting with a name and a
    space (``["Figure 3"]`` keeps "Figure 3 (W+)" and "Figure 3 (W-)")."""
    chosen = [f for f in FINDINGS if not only or any(f.name == n or f.name.startswith(n + " ") for n in only)]
    return [check(f, runs, metric, margin) for f in chosen]


def verdict_table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per verdict: finding, claim, status, effect, low, high, detectable, paper."""
    rows = []
    for v in verdicts:
        e = v.estimate
        rows.append({
            "finding": v.finding, "claim": v.claim, "verdict": v.status,
            "effect": e.effect if e else np.nan, "low": e.low if e else np.nan,
            "high": e.high if e else np.nan, "detectable": e.detectable if e else np.nan,
            "paper": v.paper, "detail": v.detail,
        })  # fmt: skip
    return pd.DataFrame(rows)
