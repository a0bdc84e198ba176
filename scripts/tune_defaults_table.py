"""The table of ``scripts/tune_defaults.sh``: each setting's dev NDCG@10 against BM25 and
against the default (lr 2e-4, 300 steps), with urlkit's paired interval over seeds and queries (urlkit.analysis.stats)
(queries resampled with one draw for every arm, seeds within arms; urlkit/analysis/stats.py).
Settings, seeds and the scored split come from each run's config.yaml. ``--prompts``: the
settings are the prompts (``prompt.system`` and ``prompt.template``, named by what follows the
document and whether there is a system turn), the default the first prompt's runs' template of
``DEFAULT_PROMPT`` (the one the runs of ``scripts/tune_prompts.sh`` call urlkit_long_question).

    python scripts/tune_defaults_table.py outputs/tuning [more roots ...]
    python scripts/tune_defaults_table.py results/tuning     # the committed runs (session 18)
    python scripts/tune_defaults_table.py --prompts results/tuning_prompts   # session 25
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from urlkit.analysis import load_runs
from urlkit.analysis.findings import arm_values
from urlkit.analysis.local_source import read_per_query
from urlkit.analysis.runset import Runs
from urlkit.analysis.stats import contrast

METRIC = "test/ndcg@10"  # the final evaluation's metric, whichever split it scored
SETTING = ["train.lr", "train.max_steps"]
DEFAULT = (2e-4, 300)
PROMPT_SETTING = ["prompt.system", "prompt.template"]
LONG_QUESTION = "Is the document relevant to the query? Answer yes or no."  # the default until session 25


def label(*setting) -> str:
    if len(setting) == 2 and isinstance(setting[0], str):  # a prompt: (system, template)
        system, template = setting
        after = template.split("{document}", 1)[1].strip() or "nothing"
        return f"after the document: {after!r}; " + ("system turn" if system else "no system turn")
    lr, steps = setting
    return f"lr {lr:.0e}".replace("e-0", "e-") + f", {int(steps)} steps"


def bm25_arm(runs: Runs) -> pd.DataFrame:
    """BM25's per-query rows beside each run's reranker, as an arm (the same for every seed:
    BM25 has no randomness)."""
    per_query = pd.concat(
        [read_per_query(Path(run["path"]), run["run_id"], run.get("data.test_split", "test"), model="bm25")
         for run in runs.config.to_dict("records")],
        ignore_index=True,
    )  # fmt: skip
    return arm_values(replace(runs, per_query=per_query), None, METRIC, per_query=True).drop_duplicates(["seed", "unit"])


def main(roots: list[str], prompts: bool = False) -> None:
    runs = load_runs(roots)
    runs = runs.subset(runs.config.loc[runs.config["status"] == "finished", "run_id"])
    if not len(runs):
        raise SystemExit(f"no finished run under {roots}")
    keys, default = SETTING, DEFAULT
    if prompts:
        keys = PROMPT_SETTING
        default = next(s for s in runs.config[keys].itertuples(index=False, name=None) if s[1].endswith(LONG_QUESTION))
    arms = {
        setting: arm_values(runs.select(dict(zip(keys, setting, strict=True))), None, METRIC, per_query=True)
        for setting in sorted(set(runs.config[keys].itertuples(index=False, name=None)))
    }
    bm25 = bm25_arm(runs)
    print(f"BM25 dev NDCG@10: {bm25.groupby('seed')['value'].mean().iloc[0]:.2f}\n")
    print("| setting | dev NDCG@10 per seed | mean | - BM25 (95% CI) | - default (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for setting, arm in sorted(arms.items(), key=lambda item: label(*item[0])):
        per_seed = arm.groupby("seed")["value"].mean()
        cells = [label(*setting), ", ".join(f"{v:.2f} (seed {s:g})" for s, v in per_seed.items()), f"{per_seed.mean():.2f}"]
        for other, rows in (("bm25", bm25[bm25["seed"].isin(per_seed.index)]), ("default", arms.get(default))):
            if other == "default" and (setting == default or rows is None):
                cells.append("")
                continue
            e = contrast({"x": arm, other: rows}, {"x": 1, other: -1})
            cells.append(f"{e.effect:+.2f} ({e.low:+.2f} to {e.high:+.2f})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--prompts"]
    if not arguments:
        raise SystemExit(__doc__)
    main(arguments, prompts="--prompts" in sys.argv[1:])
