"""Effects with intervals from few seeds and many queries: a paired, hierarchical bootstrap.

A finding compares *arms* (the runs of one grid point, one per seed) through a linear
*contrast*: ``effect = sum_a c_a * mean_a``, e.g. ``(sft,sft) - (cl,cl)`` or Table 1's
``Delta_W = [(sft,sft) + (sft,cl) - (cl,sft) - (cl,cl)] / 2``. Each arm holds a matrix of
per-unit values, units x seeds: units are test queries (per-query NDCG@10 of the final
evaluation) or optimizer steps (a per-step history column: with one seed's data order, step t
shows every arm the same query).

The interval resamples both levels of noise, paired (Saravanan et al. 2020, "Application of
the hierarchical bootstrap to multi-level data"):

- units with replacement, the SAME draw for every arm (the arms saw the same queries), and
- seeds with replacement within each arm, the same draw for every arm when all arms ran the
  same seeds (seed s of every arm shares its data order and initialisation), else one draw
  per arm. Arms that share only some seeds are compared on the shared ones.

``n_resamples`` replicates of the contrast give a percentile interval and a standard error;
the smallest detectable effect is ``(z_{1-alpha/2} + z_{power}) * se`` (2.80 se for a 95%
interval and 80% power): an effect that large would have been detected four times in five.
With one seed per arm the seed level cannot be resampled: the interval then covers query
noise only, and :class:`Estimate` says so (``seeds_resampled``). With one unit and one seed
per arm there is nothing to resample and no interval (``low`` and ``high`` are NaN).

Pure numpy; nothing here knows about runs or configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

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
    n_resamples: int = 2000,
    level: float = 0.95,
    power: float = 0.8,
    seed: int = 0,
) -> Estimate:
    """The contrast ``sum coefficients[a] * mean(arms[a])`` with its hierarchical bootstrap.

    ``arms[a]``: long table with columns seed, unit, value. Only units present for every seed
    of every arm are used (a unit missing anywhere would unpair the comparison).
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

    rng = np.random.default_rng(seed)
    unit_counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_resamples)
    resampled = np.zeros(n_resamples)
    shared_seed_counts = None
    for name in names:
        matrix, n_seeds = matrices[name], len(seeds[name])
        if paired:
            if shared_seed_counts is None:
                shared_seed_counts = rng.multinomial(
                    n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_resamples
                )
            seed_counts = shared_seed_counts
        else:
            seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_resamples)
        arm_means = ((unit_counts @ matrix) * seed_counts).sum(axis=1) / (n_units * n_seeds)
        resampled += coefficients[name] * arm_means

    seeds_resampled = min(len(s) for s in seeds.values()) > 1
    if n_units == 1 and not seeds_resampled:
        low = high = se = detectable = float("nan")
    else:
        tail = (1 - level) / 2
        low, high = (float(v) for v in np.quantile(resampled, [tail, 1 - tail]))
        se = float(resampled.std(ddof=1))
        z = NormalDist().inv_cdf(1 - tail) + NormalDist().inv_cdf(power)
        detectable = z * se
    return Estimate(
        effect=effect, low=low, high=high, se=se, detectable=detectable, units=n_units,
        seeds={a: len(s) for a, s in seeds.items()}, seeds_paired=paired,
        seeds_resampled=seeds_resampled,
    )  # fmt: skip
