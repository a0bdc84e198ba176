"""Effects with intervals from few seeds and many queries: two random effects, paired.

A finding compares *arms* (the runs of one grid point, one per seed) through a linear
*contrast*: ``effect = sum_a c_a * mean_a``, e.g. ``(sft,sft) - (cl,cl)`` or Table 1's
``Delta_W = [(sft,sft) + (sft,cl) - (cl,sft) - (cl,cl)] / 2``. Each arm holds a matrix of
per-unit values, units x seeds: units are test queries (per-query NDCG@10 of the final
evaluation), one unit (a run's final metric, when no per-query file is there) or optimizer
steps (a per-step history column).

Two sources of noise, both paired, make the interval (a t interval, Welch-Satterthwaite
degrees of freedom; with 2 seeds, the seeds' 1):

- **seeds**, the training runs: the variance of the per-seed contrast over the seeds, with
  seeds - 1 degrees of freedom. With 3 seeds that is a t of 4.30, not the 1.96 a bootstrap over
  3 seeds behaves like: resampling 3 values gives about [min, max] of them, so 3 seeds that
  agree in sign excluded 0 in ~28% of no-effect cases. When every arm ran the same seeds
  (seed s of every arm shares its data order and initialisation) the per-seed contrasts are
  paired; else each arm's seed variance adds up. Arms that share only some seeds are compared
  on the shared ones.
- **queries**, the sample of the test set: the variance of the per-query contrast (averaged
  over seeds) over the queries, the same queries for every arm, with queries - 1 degrees of
  freedom. Not for steps: a training curve's steps are neither a sample nor independent (the
  weights drift), so their uncertainty is the seeds' alone.

The query-by-seed residual is in both terms, so the interval errs wide, never narrow
(tests/analysis/test_stats_coverage.py: at most 5% of no-effect intervals exclude 0). The
smallest detectable effect is ``(t_{1-alpha/2} + t_{power}) * se`` (for a 95% interval and 80%
power): an effect that large would have been detected four times in five. With one seed in an
arm the seed variance cannot be estimated: the interval then covers query noise only, and
:class:`Estimate` says so (``seeds_resampled`` False; a verdict on it is inconclusive). With
one unit and one seed nothing varies and there is no interval (``low`` and ``high`` NaN).

Pure numpy and scipy; nothing here knows about runs or configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

ARM_COLUMNS = ("seed", "unit", "value")


@dataclass(frozen=True)
class Estimate:
    """A contrast's point estimate, interval and detectable effect (same units as the values)."""

    effect: float
    low: float
    high: float
    se: float
    detectable: float
    units: int  # units (queries or steps) shared by every arm
    seeds: dict[str, int]  # seeds per arm
    seeds_paired: bool
    seeds_resampled: bool

    @property
    def has_interval(self) -> bool:
        return not (np.isnan(self.low) or np.isnan(self.high))


class ContrastError(ValueError):
    """Arms that cannot be compared (no unit shared by all of them, an arm without values)."""


def arm_matrix(values: pd.DataFrame, units: pd.Index) -> tuple[np.ndarray, list]:
    """Long (seed, unit, value) -> (units x seeds) matrix over ``units``, and the seeds.

    Several runs of one seed in an arm (a repeated run) are averaged per unit.
    """
    wide = values.pivot_table(index="unit", columns="seed", values="value", aggfunc="mean")
    return wide.reindex(units).to_numpy(dtype=float), list(wide.columns)


def contrast(
    arms: Mapping[str, pd.DataFrame],
    coefficients: Mapping[str, float],
    level: float = 0.95,
    power: float = 0.8,
    resample_units: bool = True,
) -> Estimate:
    """The contrast ``sum coefficients[a] * mean(arms[a])`` with its interval (module docstring).

    ``arms[a]``: long table with columns seed, unit, value. Only units present for every seed
    of every arm are used (a unit missing anywhere would unpair the comparison).
    ``resample_units``: the units are a sample (queries: their noise is in the interval), not
    the whole of what was measured (the steps of a training curve).
    """
    names = [a for a in coefficients if coefficients[a] != 0]
    for name in names:
        frame = arms.get(name)
        if frame is None or frame.empty:
            raise ContrastError(f"arm {name!r} has no values")
        missing = [c for c in ARM_COLUMNS if c not in frame]
        if missing:
            raise ContrastError(f"arm {name!r} lacks columns {missing}")
    # seeds shared by every arm are compared pairwise; when the arms ran partly different
    # seeds (a grid still filling up), only the shared ones are used, so an extra seed in one
    # arm cannot pass its seed-to-seed noise off as an effect
    seed_sets = [set(arms[name]["seed"].dropna()) for name in names]
    common = set.intersection(*seed_sets) if seed_sets else set()
    if common and any(s != common for s in seed_sets):
        arms = {name: arms[name][arms[name]["seed"].isin(common)] for name in names}
    shared = None
    for name in names:
        frame = arms[name].dropna(subset=["value"])
        per_seed = frame.groupby("seed")["unit"].apply(set)
        arm_units = set.intersection(*per_seed) if len(per_seed) else set()
        shared = arm_units if shared is None else shared & arm_units
    if not shared:
        raise ContrastError(f"the arms {names} share no query or step with a value in every run")
    units = pd.Index(sorted(shared, key=str))
    matrices = {}
    seeds = {}
    for name in names:
        matrix, arm_seeds = arm_matrix(arms[name].dropna(subset=["value"]), units)
        matrices[name], seeds[name] = matrix, arm_seeds
    paired = len({tuple(s) for s in seeds.values()}) == 1
    n_units = len(units)
    effect = float(sum(coefficients[a] * matrices[a].mean() for a in names))

    # seeds: the per-seed contrast (paired) or each arm's per-seed means (unpaired)
    seed_parts: list[tuple[float, int]] = []  # (variance of the effect, degrees of freedom)
    if paired:
        per_seed = sum(coefficients[a] * matrices[a].mean(axis=0) for a in names)
        if len(per_seed) > 1:
            seed_parts.append((float(per_seed.var(ddof=1)) / len(per_seed), len(per_seed) - 1))
    else:
        for a in names:
            means = matrices[a].mean(axis=0)
            if len(means) > 1:
                seed_parts.append((coefficients[a] ** 2 * float(means.var(ddof=1)) / len(means), len(means) - 1))
    seeds_resampled = min(len(s) for s in seeds.values()) > 1
    # queries: the per-query contrast, each query's values averaged over its arm's seeds
    parts = list(seed_parts)
    if resample_units and n_units > 1:
        per_unit = sum(coefficients[a] * matrices[a].mean(axis=1) for a in names)
        parts.append((float(per_unit.var(ddof=1)) / n_units, n_units - 1))

    if not parts:
        low = high = se = detectable = float("nan")
    else:
        variance = sum(v for v, _ in parts)
        se = variance**0.5
        # Welch-Satterthwaite: the degrees of freedom of a sum of variance estimates; but a seed
        # variance from 2 values (1 degree of freedom) is so noisy that, trusting a small draw
        # of it, it gave 10% of no-effect intervals a verdict: there the seeds' 1 is used
        denominator = sum(v**2 / df for v, df in parts)
        dof = variance**2 / denominator if denominator > 0 else float("inf")
        if seed_parts and min(df for _, df in seed_parts) < 2:
            dof = 1.0
        tail = (1 - level) / 2
        t, t_power = (float(student_t.ppf(q, dof)) for q in (1 - tail, power))  # dof inf: the normal's
        low, high = effect - t * se, effect + t * se
        detectable = (t + t_power) * se
    return Estimate(
        effect=effect, low=low, high=high, se=se, detectable=detectable, units=n_units,
        seeds={a: len(s) for a, s in seeds.items()}, seeds_paired=paired,
        seeds_resampled=seeds_resampled,
    )  # fmt: skip
