"""python -m urlkit.study: a tiny study end to end, its plan per profile, and resuming."""

from __future__ import annotations

import json

import pytest
from helpers.run_helpers import write_small_dataset

from urlkit.study import main, plan


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """``figure3 --tiny`` on the small dataset: 2 runs of 3 steps, then the findings."""
    root = tmp_path_factory.mktemp("study")
    data = write_small_dataset(root / "data")
    args = [
        "figure3",
        "--tiny",
        f"data.path={data}",
        "--output-root",
        str(root / "out"),
        "--figures",
        str(root / "figures"),
    ]
    return root, args


def test_tiny_study_trains_its_grid_and_prints_findings(tiny_study, capsys):
    # the notebook step is left out here (tests/test_notebooks.py executes every notebook on
    # real runs; a kernel start costs seconds); python -m urlkit.study runs it by default
    root, args = tiny_study
    assert main([*args, "--progress-every", "0", "--skip-notebooks"]) == 0
    out = capsys.readouterr().out
    runs = root / "out" / "studies" / "tiny" / "figure3_weights"
    assert sorted(p.name for p in runs.iterdir()) == ["objective=cl,seed=0", "objective=sft,seed=0"]
    for run in runs.iterdir():
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert len((run / "history.csv").read_text().splitlines()) == 1 + 3  # header + 3 tiny steps
    assert "[study] run 1/2 figure3_weights/objective=sft,seed=0 | 6 steps to go" in out
    assert "[study] run 2/2 figure3_weights/objective=cl,seed=0 | elapsed" in out and "ETA" in out
    verdicts = [line for line in out.splitlines() if line.startswith("- ")]
    assert [v.split(":")[0] for v in verdicts] == ["- Figure 2", "- Figure 3"]


def test_study_resumes_skips_finished_runs_and_refuses_a_changed_config(tiny_study, capsys):
    root, args = tiny_study
    if not (root / "out" / "studies").exists():
        pytest.skip("needs the tiny study of the previous test")
    assert main([*args, "--skip-notebooks"]) == 0
    assert "[study] 2 runs, 2 already finished, 0 to train" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_:
        main([*args, "train.max_steps=5"])
    assert exit_.value.code == 2
    assert (
        "objective=sft,seed=0 holds a run with another config (differs in: train.max_steps)"
        in capsys.readouterr().err
    )

    # an unfinished run (killed, failed) is resumed by urlkit.run in its own directory
    study_root = root / "out" / "studies" / "tiny"
    run = study_root / "figure3_weights" / "objective=cl,seed=0"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    planned = {p.run_dir.name: p for p in plan(["figure3"], "tiny", [args[2]], study_root, "none")}
    assert {name: p.state for name, p in planned.items()} == {
        "objective=sft,seed=0": "finished",
        "objective=cl,seed=0": "resume",
    }
    assert main([*args, "--skip-notebooks", "--progress-every", "0"]) == 0
    assert "[study] 2 runs, 1 already finished, 1 to train" in capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3  # no step twice


def test_laptop_plan_is_one_seed_of_100_steps_and_overrides_widen_it(tmp_path):
    planned = plan(["table1"], "laptop", [], tmp_path, "none")
    assert sorted(p.run_dir.name for p in planned) == sorted(
        f"weight={w},direction={d},seed=0" for w in ("sft", "cl") for d in ("sft", "cl")
    )
    for p in planned:
        assert p.state == "new" and p.cfg.model.name == "smollm2_135m"
        assert (p.cfg.train.max_steps, p.cfg.eval.test_queries, p.cfg.logger.name) == (
            100,
            100,
            "none",
        )
        assert p.run_dir.parent == tmp_path / "table1_weight_direction"
    widened = plan(["table1"], "laptop", ["seed=0,1", "train.max_steps=20"], tmp_path, "none")
    assert len(widened) == 8 and {p.cfg.train.max_steps for p in widened} == {20}
    assert {p.cfg.seed for p in widened} == {0, 1}


def test_unknown_study_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["figure99"])
    assert "invalid choice: 'figure99'" in capsys.readouterr().err
