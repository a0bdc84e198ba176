"""python -m urlkit.study: a tiny study end to end, its plan per profile, and resuming."""

from __future__ import annotations

import json

import pytest
from helpers.run_helpers import write_small_dataset

from urlkit.study import estimate, main, plan


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """``figure3 --tiny`` on the small dataset: 4 runs of 3 steps (URL and native, sft and cl),
    then the findings."""
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
    study = root / "out" / "studies" / "tiny"
    runs = {p.parent.name + "/" + p.name for p in study.glob("*/*") if p.is_dir()}
    assert runs == {"figure3_weights/objective=sft,seed=0", "figure3_weights/objective=cl,seed=0",
                    "figure2_native/objective=native_sft,seed=0",
                    "figure2_native/objective=native_infonce,seed=0"}  # fmt: skip
    for run in runs:
        assert json.loads((study / run / "run.json").read_text())["status"] == "finished"
        assert len((study / run / "history.csv").read_text().splitlines()) == 1 + 3  # 3 tiny steps
    assert "[study] figure3: 4 runs (4 to train, ~" in out and "data: wordsense" in out
    assert "[study] run 1/4 figure3_weights/objective=sft,seed=0 | 12 steps to go" in out
    assert "[study] run 4/4 figure2_native/objective=native_infonce,seed=0 | elapsed" in out
    verdicts = [line for line in out.splitlines() if line.startswith("- ")]
    assert [v.split(":")[0] for v in verdicts] == [
        "- Figure 2 (SFT)", "- Figure 2 (CL)", "- Figure 3 (W+)", "- Figure 3 (W-)"]  # fmt: skip
    # one seed, 3 queries: every verdict is an honest inconclusive or holds/fails with its interval
    assert all("effect " in v and "95% interval" in v for v in verdicts)


def test_study_resumes_skips_finished_runs_and_refuses_a_changed_config(tiny_study, capsys):
    root, args = tiny_study
    if not (root / "out" / "studies").exists():
        pytest.skip("needs the tiny study of the previous test")
    assert main([*args, "--skip-notebooks"]) == 0
    assert "[study] 4 runs, 4 already finished, 0 to train" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_:
        main([*args, "train.max_steps=5"])
    assert exit_.value.code == 2
    assert (
        "objective=sft,seed=0 holds a run with another config (differs in: train.max_steps)"
        in capsys.readouterr().err
    )

    # a run's config.yaml cut short (a copy, a hand edit): an error naming the file, no traceback
    study_root = root / "out" / "studies" / "tiny"
    config = study_root / "figure3_weights" / "objective=sft,seed=0" / "config.yaml"
    text = config.read_text()
    config.write_text(text[: len(text) // 3] + "\n  [unclosed: {\n")
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--plan-only"])
    assert exit_.value.code == 2
    assert f"error: {config} cannot be read (" in capsys.readouterr().err
    config.write_text(text)

    # an unfinished run (killed, failed) is resumed by urlkit.run in its own directory
    run = study_root / "figure3_weights" / "objective=cl,seed=0"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    planned = {p.run_dir.name: p for p in plan(["figure3"], "tiny", [args[2]], study_root, "none")}
    assert {name: p.state for name, p in planned.items()} == {
        "objective=sft,seed=0": "finished",
        "objective=cl,seed=0": "resume",
        "objective=native_sft,seed=0": "finished",
        "objective=native_infonce,seed=0": "finished",
    }
    assert main([*args, "--skip-notebooks", "--progress-every", "0"]) == 0
    assert "[study] 4 runs, 3 already finished, 1 to train" in capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3  # no step twice


def test_laptop_plan_is_three_seeds_from_its_profile_and_overrides_widen_it(tmp_path):
    planned = plan(["table1"], "laptop", [], tmp_path, "none")
    # Table 1's diagonal, URL(sft, sft) and URL(cl, cl), is figure3_weights' runs: trained once
    table1 = [p for p in planned if p.experiment == "table1_weight_direction"]
    assert sorted(p.run_dir.name for p in table1) == sorted(
        f"weight={w},direction={d},seed={s}" for w, d in (("sft", "cl"), ("cl", "sft")) for s in (0, 1, 2)
    )
    diagonal = [p for p in planned if p.experiment == "figure3_weights"]
    assert len(diagonal) == 6 and all(p.also == ["table1_weight_direction"] for p in diagonal)
    assert {(p.cfg.weight.name, p.cfg.direction.name) for p in diagonal} == {("sft", "sft"), ("cl", "cl")}
    assert len(planned) == 12
    for p in planned:
        assert (
            p.state == "new"
            and p.cfg.model.name == "smollm2_135m"
            and p.cfg.profile.name == "laptop"
        )
        assert (p.cfg.train.max_steps, p.cfg.eval.test_queries, p.cfg.logger.name) == (
            50,
            100,
            "none",
        )
        assert p.cfg.data.random_from == "corpus"
    widened = plan(["table1"], "laptop", ["seed=0,1", "train.max_steps=20"], tmp_path, "none")
    assert len(widened) == 8 and {p.cfg.train.max_steps for p in widened} == {20}
    assert {p.cfg.seed for p in widened} == {0, 1}
    runs, minutes = estimate(planned)
    assert runs == 12 and minutes > 0
    # a key the user sweeps names the folders too (it used to put two runs in each folder)
    swept = plan(["table1"], "laptop", ["train.lr=1e-4,2e-4"], tmp_path, "none")
    assert len(swept) == 24 and len({p.run_dir for p in swept}) == 24
    assert {p.run_dir.name.split(",")[-1] for p in swept} == {"train.lr=0.0001", "train.lr=0.0002"}


def test_the_estimate_counts_dev_evaluations_queries_per_step_and_the_whole_test_split(tmp_path):
    # the paper profile: 25 s start-up, 1.4 s a step of one query x (1 + 4) documents, 0.34 s a
    # query scored: the whole test split (wordsense 500, manpages 300 queries) and, every 100 of
    # the 300 steps, 50 dev queries. It used to leave out the dev evaluations and
    # queries_per_step x accumulate, and took 500 test queries for every dataset.
    def minutes(study, *overrides):
        runs = plan([study], "paper", ["seed=0", *overrides], tmp_path, "none")
        assert len(runs) == 1
        return estimate(runs)[1]

    assert minutes("tau", "weight.tau=1e-3") == pytest.approx((25 + 1.4 * 300 + 0.34 * (500 + 3 * 50)) / 60)
    four_queries = ["train.queries_per_step=2", "train.accumulate=2"]
    assert minutes("tau", "weight.tau=1e-3", *four_queries) == pytest.approx(
        (25 + 1.4 * 300 * 4 + 0.34 * (500 + 3 * 50)) / 60
    )
    assert minutes("figure5", "+objective=sft", "data.n_negatives=4") == pytest.approx(
        (25 + 1.4 * 300 + 0.34 * (300 + 3 * 50)) / 60
    )


def test_a_value_urlkit_run_refuses_is_an_error_before_the_plan(tmp_path, capsys):
    # it used to be a ValueError traceback from the estimate (exit 1), or a plan whose every
    # run then failed with it in turn
    for override, message in (
        ("train.max_steps=abc", "train.max_steps='abc' must be an integer >= 1"),
        ("eval.test_queries=-3", "eval.test_queries=-3 must be an integer >= 1 or null"),
        ("data.path=/nowhere", "data.path=/nowhere: no such file or directory"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["tau", "--tiny", "--plan-only", "--output-root", str(tmp_path), override])
        assert exit_.value.code == 2
        assert f"error: {message}\n" in capsys.readouterr().err


def test_a_damaged_run_json_is_an_error_naming_it_not_a_traceback(tmp_path, capsys):
    import yaml
    from omegaconf import OmegaConf

    args = ["tau", "--tiny", "--plan-only", "--output-root", str(tmp_path), "weight.tau=1e-3"]
    (run,) = plan(["tau"], "tiny", args[-1:], tmp_path / "studies" / "tiny", "none")
    run.run_dir.mkdir(parents=True)  # a run of this very config, its run.json cut short by a copy
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(run.cfg, resolve=True)))
    (run.run_dir / "run.json").write_text('{"status": "fini')
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert f"error: {run.run_dir / 'run.json'} cannot be read (" in capsys.readouterr().err


def test_the_same_swept_overrides_in_another_order_name_the_same_folders(tmp_path):
    # a study run again with its overrides in another order used to name other folders, and
    # so trained every finished run again
    first = plan(["tau"], "tiny", ["train.lr=1e-4,2e-4", "data.n_negatives=2,4"], tmp_path, "none")
    again = plan(["tau"], "tiny", ["data.n_negatives=2,4", "train.lr=1e-4,2e-4"], tmp_path, "none")
    assert len(first) == 12 and sorted(p.run_dir for p in first) == sorted(p.run_dir for p in again)
    assert "weight.tau=0.0001,seed=0,data.n_negatives=2,train.lr=0.0001" in {p.run_dir.name for p in first}


def _computation(planned):
    from omegaconf import OmegaConf

    from urlkit.analysis.runset import flatten
    from urlkit.study.plan import _setup

    return _setup(flatten(OmegaConf.to_container(planned.cfg, resolve=True)))


def test_the_plan_of_all_trains_each_computation_once_and_every_study_keeps_its_arms(tmp_path):
    """Table 3's native arms, Table 15's frozen head and Figure 4's K=2 are figure3_weights'
    runs, Table 2's cl weight Table 1's URL(cl, sft), its tau mask the tau table's 1e-3: `study
    all` trained each of them twice (once per experiment), 7 runs of 30 a seed."""
    from urlkit.study.plan import STUDIES

    everything = plan(list(STUDIES), "tiny", [], tmp_path, "none")
    computations = [_computation(p) for p in everything]
    assert len(set(computations)) == len(computations) == 30
    served = {(e, c) for p, c in zip(everything, computations, strict=True) for e in p.experiments}
    for name in STUDIES:  # every grid point of every study is a run of the plan, serving its experiment
        alone = plan([name], "tiny", [], tmp_path, "none")
        wanted = {(e, _computation(p)) for p in alone for e in p.experiments}
        assert wanted <= served, name
    by_folder = {f"{p.run_dir.parent.name}/{p.run_dir.name}": p.experiments for p in everything}
    assert by_folder["figure3_weights/objective=sft,seed=0"] == [
        "figure3_weights", "table1_weight_direction", "table3_random_direction", "table15_lm_head", "figure4_tokens"]  # fmt: skip
    assert by_folder["table1_weight_direction/weight=cl,direction=sft,seed=0"] == [
        "table1_weight_direction", "table2_weight_properties"]  # fmt: skip
    assert by_folder["table2_weight_properties/weight=tau_mask,seed=0"] == ["table2_weight_properties", "table6_tau"]


def test_a_later_study_plans_a_finished_run_of_another_experiment_as_its_own(tmp_path):
    import yaml
    from omegaconf import OmegaConf

    root = tmp_path / "studies" / "tiny"
    for run in plan(["figure3"], "tiny", ["+objective=sft"], root, "none"):  # figure3_weights' URL(sft, sft)
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(run.cfg, resolve=True)))
        (run.run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    planned = plan(["table3"], "tiny", ["+objective=sft,cl"], root, "none")
    again = {p.run_dir.parent.name + "/" + p.run_dir.name: p for p in planned}
    reused = again["figure3_weights/objective=sft,seed=0"]
    assert (reused.state, reused.experiments) == ("finished", ["figure3_weights", "table3_random_direction"])
    assert again["table3_random_direction/objective=cl,seed=0"].state == "new"
    assert set(again) == {"figure3_weights/objective=sft,seed=0", "table3_random_direction/objective=cl,seed=0"}


@pytest.mark.timeout(600)
def test_a_second_study_reuses_a_finished_run_and_its_findings_find_the_arm(tiny_study, capsys):
    """`study table15` after `study figure3` into the same root: Table 15's frozen SFT head is
    figure3_weights' URL(sft, sft), finished: kept, not trained again, and Table 15's
    finding and the analysis read it as a run of table15_lm_head."""
    from urlkit.analysis import load_runs

    root, args = tiny_study
    assert main([*args, "--skip-notebooks", "--progress-every", "0"]) == 0  # trained already: nothing
    study = root / "out" / "studies" / "tiny"
    shared = study / "figure3_weights" / "objective=sft,seed=0"
    before = (shared / "history.csv").stat().st_mtime_ns, (shared / "run.json").read_text()
    capsys.readouterr()
    table15 = ["table15", *args[1:], "+objective=sft"]
    assert main([*table15, "--skip-notebooks", "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "[study] table15_lm_head: 1 of its runs are figure3_weights's (same config), trained once" in out
    assert "[study] 2 runs, 1 already finished, 1 to train" in out
    assert ((shared / "history.csv").stat().st_mtime_ns, (shared / "run.json").read_text()) == before
    assert sorted(p.name for p in (study / "table15_lm_head").iterdir() if p.is_dir()) == [
        "objective=sft,head.trainable=True,seed=0"]  # fmt: skip
    assert (shared / "experiments.txt").read_text().split() == ["table15_lm_head"]
    verdicts = {line.split(":")[0]: line for line in out.splitlines() if line.startswith("- Table 15")}
    assert "effect " in verdicts["- Table 15 (SFT)"] and "not run" not in verdicts["- Table 15 (SFT)"]
    assert "no run of cl,trainable" in verdicts["- Table 15 (CL)"]  # the study ran SFT only
    arms = load_runs(study).of_experiments("table15_lm_head").config
    assert sorted(zip(arms["experiment_name"], arms["head.trainable"], strict=True)) == [
        ("figure3_weights", False), ("table15_lm_head", True)]  # fmt: skip


def test_plan_only_prints_runs_and_minutes_per_study(capsys):
    assert main(["all", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "[study] figure5: 30 runs (30 to train, ~" in out and "data: manpages" in out
    assert "[study] plan: " in out and " min here (profile laptop" in out
    assert "[study] table1_weight_direction: 6 of its runs are figure3_weights's (same config), trained once" in out


def test_a_profile_is_a_hydra_config_group_of_urlkit_run(tmp_path):
    from helpers.run_helpers import compose_train

    cfg = compose_train(tmp_path, "+profile=laptop")
    assert cfg.profile.name == "laptop" and cfg.eval.test_queries == 100


def test_unknown_study_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["figure99"])
    assert "invalid choice: 'figure99'" in capsys.readouterr().err
