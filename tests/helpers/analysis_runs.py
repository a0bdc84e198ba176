"""Real training runs (tiny model, a few steps) shared by the analysis, findings and notebook tests.

They are trained once per pytest session into the session's base temp folder, whichever
test module asks first, then read by the others: the notebooks and the loader see real
run directories written by ``urlkit.run.train``, never hand-written numbers.
"""

from __future__ import annotations

from pathlib import Path

from helpers.run_helpers import compose_train, write_small_dataset

# (experiment, overrides): two seeds of URL(sft, sft) and URL(cl, cl) for Table 1 and the
# weight curves; one negatives count per objective (Figure 5 pools them with Table 1's 3).
# Each run costs seconds on two cores: add one only for what no other run can show.
RUNS = [
    ("table1_weight_direction", ["weight=sft", "direction=sft", "seed=0"]),
    ("table1_weight_direction", ["weight=sft", "direction=sft", "seed=1"]),
    ("table1_weight_direction", ["weight=cl", "direction=cl", "seed=0"]),
    ("table1_weight_direction", ["weight=cl", "direction=cl", "seed=1"]),
    # every run trains on the same small dataset, so it keeps one name (figure5 would say
    # manpages): runs of two data names are two setups, which no table or finding pools
    ("figure5_negatives", ["+objective=sft", "data.n_negatives=1", "seed=0", "data.name=wordsense"]),
    ("figure5_negatives", ["+objective=cl", "data.n_negatives=1", "seed=0", "data.name=wordsense"]),
]
STEPS = 3
FAST_EVAL = [
    "eval.test_queries=3",
    "eval.depth=6",
    "eval.batch_size=6",
    "checkpoint.every_n_steps=100",
]


def shared_runs(tmp_path_factory) -> Path:
    """The folder of the shared runs (trained on first use in this session)."""
    from urlkit.train import train

    root = tmp_path_factory.getbasetemp() / "urlkit-analysis-runs"
    runs = root / "runs"
    if (root / "complete").exists():
        return runs
    data = write_small_dataset(root / "data")
    for i, (experiment, overrides) in enumerate(RUNS):
        cfg = compose_train(
            data, f"experiment={experiment}", *overrides, f"train.max_steps={STEPS}", *FAST_EVAL
        )
        train(cfg, runs / experiment / f"{i}_{'_'.join(o.lstrip('+') for o in overrides)}")
    (root / "complete").touch()
    return runs
