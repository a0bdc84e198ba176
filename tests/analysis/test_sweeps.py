"""Experiments and W&B sweep files: every grid point is a valid override set of conf/train.yaml.

Each point of each experiment grid is composed with Hydra (the seed axis round-robin: seeds
change no structure, so every seed value is composed once, every other combination fully)
and the values must land; each sweep file must stand for exactly its experiment's grid.
"""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest
from omegaconf import OmegaConf

from urlkit.grids import (
    EXPERIMENTS_DIR,
    SWEEPS_DIR,
    GridError,
    config_composer,
    experiment_grid,
    experiment_names,
    parse_point,
    read_sweep,
    sweep_grid,
)
from urlkit.paths import REPO_ROOT

# the (weight, direction) pair of each file of conf/objective/
OBJECTIVES = {
    "sft": ("sft", "sft"),
    "cl": ("cl", "cl"),
    "sft_rand": ("sft", "rand"),
    "cl_rand": ("cl", "rand"),
    "native_sft": ("sft", "sft"),  # + loss=native_sft: the native loss itself
    "native_infonce": ("cl", "cl"),
}
GROUPS = {
    "weight",
    "direction",
    "model",
    "head",
    "data",
    "trainer",
    "logger",
    "objective",
    "experiment",
}


@pytest.fixture(scope="module")
def compose():
    with config_composer() as composer:
        yield composer


def _as_set(grid):
    return {frozenset(parse_point(point).items()) for point in grid}


def _points_to_compose(grid):
    """One point per combination of the non-seed keys, seeds taken in turn; every seed once."""
    groups = {}
    for point in grid:
        rest = frozenset((k, v) for k, v in parse_point(point).items() if k != "seed")
        groups.setdefault(rest, []).append(point)
    chosen = [points[i % len(points)] for i, points in enumerate(groups.values())]
    covered = {parse_point(p)["seed"] for p in chosen}
    chosen += [
        next(p for p in grid if parse_point(p)["seed"] == s)
        for s in {parse_point(p)["seed"] for p in grid} - covered
    ]
    return chosen


def _check_landed(cfg, point):
    choices = cfg.hydra.runtime.choices
    for key, value in parse_point(point).items():
        key = key.lstrip("+~")
        if key == "objective":
            weight, direction = OBJECTIVES[value]
            assert choices["objective"] == value
            assert (choices["weight"], choices["direction"]) == (weight, direction), point
        elif key in GROUPS:
            assert choices[key] == value, (point, key)
        else:
            landed = OmegaConf.select(cfg, key)
            assert (
                landed == pytest.approx(value) if isinstance(value, float) else landed == value
            ), (point, key, landed)


def test_the_papers_experiments_are_there():
    # sweeps/ is generated from these and checked by tests/entry/test_sweeps_cli.py
    experiments = set(experiment_names())
    assert {"table1_weight_direction", "table2_weight_properties", "table3_random_direction", "table5_precision",
            "table6_tau", "table15_lm_head", "figure3_weights", "figure4_tokens", "figure5_negatives"} <= experiments  # fmt: skip


@pytest.mark.parametrize("name", experiment_names())
def test_every_point_of_an_experiment_grid_composes(name, compose):
    grid = experiment_grid(name, compose_overrides=compose)
    seeds = {parse_point(p)["seed"] for p in grid}
    assert seeds == {0, 1, 2}
    points = _points_to_compose(grid)
    assert {parse_point(p)["seed"] for p in points} == seeds
    for point in points:
        cfg = compose(point)
        _check_landed(cfg, point)
        assert cfg.experiment_name == name and cfg.logger.group == name


def test_sweep_files_pass_overrides_as_wandb_formats_them():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        parameters = read_sweep(path)["parameters"]
        axes = [[(k, v) for v in p.get("values", [p.get("value")])] for k, p in parameters.items()]
        for combo, point in zip(itertools.product(*axes), sweep_grid(path), strict=True):
            args = {key: {"value": value} for key, value in combo}
            assert create_sweep_command_args({"args": args})["args_no_hyphens"] == point


def test_objectives_pair_a_weight_with_a_direction(compose):
    for objective, (weight, direction) in OBJECTIVES.items():
        paired = compose([f"+objective={objective}"])
        explicit = compose([f"weight={weight}", f"direction={direction}"])
        assert paired.weight == explicit.weight and paired.direction == explicit.direction


def test_probing_setting_is_the_papers(compose):
    settings = pd.read_csv(REPO_ROOT / "urlkit" / "paper" / "settings.csv").set_index("setting")[
        "value"
    ]
    cfg = compose(["experiment=probing"])
    assert cfg.model.lora.r == int(re.search(r"rank (\d+)", settings["adapter"]).group(1))
    assert cfg.train.lr == float(settings["learning_rate"])
    assert cfg.data.n_negatives == int(re.match(r"(\d+)", settings["negatives_probing"]).group(1))
    assert cfg.eval.depth == int(re.search(r"top-(\d+)", settings["rerank_depth_probing"]).group(1))
    assert settings["negative_mix"].startswith("1:1") and cfg.data.hard_fraction == 0.5
    # an experiment is a setting for a single run too: no sweep without -m
    assert compose(["experiment=table1_weight_direction"]).weight.name == "sft"


def test_extra_overrides_replace_a_swept_key_like_hydra_multirun(compose):
    grid = experiment_grid("figure5_negatives", ["seed=0", "train.max_steps=7"], compose)
    assert len(grid) == 2 * 5
    assert all("seed=0" in p and "train.max_steps=7" in p for p in grid)


def test_bad_sweep_files_and_experiments_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: random\nparameters: {seed: {values: [0]}}\ncommand: [python]\n")
    with pytest.raises(GridError, match="bad.yaml: method is 'random'"):
        read_sweep(bad)
    bad.write_text("method: grid\nparameters: {seed: {values: [0]}}\ncommand: [python, train.py]\n")
    with pytest.raises(GridError, match=r"args_no_hyphens"):
        read_sweep(bad)
    text = (
        (SWEEPS_DIR / "table6_tau.yaml")
        .read_text()
        .replace("values: [0, 1, 2]", "values: [0]\n    value: 1")
    )
    bad.write_text(text)
    with pytest.raises(GridError, match="'seed' needs exactly one of"):
        read_sweep(bad)
    with pytest.raises(GridError, match="no experiment 'table99'"):
        experiment_grid("table99")
    assert (EXPERIMENTS_DIR / "probing.yaml").exists() and "probing" not in experiment_names()
