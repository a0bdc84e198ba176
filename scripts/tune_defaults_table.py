"""The table of ``scripts/tune_defaults.sh``: each setting's dev NDCG@10 against BM25 and
against the default (lr 2e-4, 300 steps), with urlkit's paired hierarchical bootstrap
(queries resampled with one draw for every arm, seeds within arms; urlkit/analysis/stats.py).

    python scripts/tune_defaults_table.py outputs/tuning [more roots ...]
    python scripts/tune_defaults_table.py results/tuning     # the committed runs (session 18)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from urlkit.analysis.stats import contrast

DEFAULT = "lr 2e-4, 300 steps"
RUN_NAME = re.compile(r"lr(?P<lr>[^_]+)_steps(?P<steps>\d+)_seed(?P<seed>\d+)")


def per_query(run: Path, model: str, seed: int) -> pd.DataFrame:
    """One run's per-query dev NDCG@10 x 100 of ``model`` as the (seed, unit, value) rows of an arm."""
    path = run / "per_query" / f"wordsense_dev_{model}.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: not a finished tuning run (data.test_split=dev)")
    frame = pd.read_csv(path, dtype={"query_id": str})
    return pd.DataFrame({"seed": seed, "unit": frame["query_id"], "value": 100 * frame["ndcg@10"]})


def load(roots: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Arms by setting, and BM25's rows (the same for every seed: it has no randomness)."""
    arms: dict[str, list[pd.DataFrame]] = {}
    bm25 = []
    for root in roots:
        for folder in sorted(Path(root).iterdir()):
            match = RUN_NAME.fullmatch(folder.name)
            if not match or not folder.is_dir():
                continue
            # a run directory itself (results/tuning/) or the output root of one (outputs/tuning/)
            runs = [folder] if (folder / "config.yaml").is_file() else sorted(folder.glob("runs/*/"))
            for run in runs:
                if not (run / "metrics.json").is_file():
                    print(f"skipped (unfinished): {run}", file=sys.stderr)
                    continue
                seed = int(match["seed"])
                arms.setdefault(f"lr {match['lr']}, {match['steps']} steps", []).append(per_query(run, "reranker", seed))
                bm25.append(per_query(run, "bm25", seed))
    if not arms:
        raise SystemExit(f"no finished tuning run (lr*_steps*_seed*[/runs/*]/metrics.json) under {roots}")
    return {k: pd.concat(v) for k, v in arms.items()}, pd.concat(bm25).drop_duplicates(["seed", "unit"])


def main(roots: list[str]) -> None:
    arms, bm25 = load(roots)
    print(f"BM25 dev NDCG@10: {bm25.groupby('seed')['value'].mean().iloc[0]:.2f}\n")
    print("| setting | dev NDCG@10 per seed | mean | - BM25 (95% CI) | - default (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for name, arm in sorted(arms.items()):
        per_seed = arm.groupby("seed")["value"].mean()
        seeds = ", ".join(f"{v:.2f} (seed {s})" for s, v in per_seed.items())
        cells = [name, seeds, f"{per_seed.mean():.2f}"]
        for other, rows in (("bm25", bm25[bm25["seed"].isin(per_seed.index)]), ("default", arms.get(DEFAULT))):
            if other == "default" and (name == DEFAULT or rows is None):
                cells.append("")
                continue
            e = contrast({"x": arm, other: rows}, {"x": 1, other: -1})
            cells.append(f"{e.effect:+.2f} ({e.low:+.2f} to {e.high:+.2f})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
