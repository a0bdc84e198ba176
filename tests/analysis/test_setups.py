"""One setup per comparison: findings, tables and figures refuse runs that differ in more than
what they compare (the negatives per query, the weight's temperature, the model's dtype, ...)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from helpers.synthetic_runs import write_arms

from urlkit.analysis import load_runs
from urlkit.analysis.figures import objective_runs, weight_summary
from urlkit.analysis.findings import FINDINGS, MIXED, check
from urlkit.analysis.runset import AnalysisError, setup_differences
from urlkit.analysis.tables import seed_summary

pytestmark = pytest.mark.timeout(120)
BY_NAME = {f.name: f for f in FINDINGS}
W_POS = BY_NAME["Figure 3 (W+)"]
FIG3 = {("figure3_weights", "sft"): {"objective": "sft"}, ("figure3_weights", "cl"): {"objective": "cl"}}


def _edit(run_dir, **changes) -> None:
    """Set dotted keys of a run's config.yaml (a value None removes the key)."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = cfg
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))


def _runs(tmp_path, arms=FIG3, seeds=3, **every):
    root = write_arms(tmp_path / "runs", arms, {}, seeds=seeds, steps=8)
    for config in root.rglob("config.yaml"):
        _edit(config.parent, **{"data.n_negatives": 4, "weight.temperature": 1.0, **every})
    return root


def test_another_number_of_negatives_in_one_arm_is_a_mixed_setup(tmp_path):
    root = _runs(tmp_path)
    assert check(W_POS, load_runs(root)).status != MIXED
    _edit(root / "figure3_weights" / "cl,seed=1", **{"data.n_negatives": 16})
    verdict = check(W_POS, load_runs(root))
    assert verdict.status == MIXED
    assert "data.n_negatives (4: 5 runs, 16: 1 runs)" in verdict.detail


def test_what_the_arms_vary_brings_its_own_keys_along(tmp_path):
    """objective = (weight, direction, loss): the cl weight's temperature comes with it; the
    same temperature key is a difference where the arms vary only the weight's dtype."""
    root = _runs(tmp_path)
    for run in (root / "figure3_weights").glob("cl,*"):
        _edit(run, **{"weight.temperature": 0.05})
    assert check(W_POS, load_runs(root)).status != MIXED
    config = load_runs(root).config
    assert setup_differences(config, ["objective"]) == {}
    assert setup_differences(config, ["weight.name", "direction.name"]) == {}
    assert set(setup_differences(config, ["weight.dtype"])) == {"weight.name", "direction.name",
                                                                "weight.temperature"}  # fmt: skip


def test_a_key_a_run_does_not_record_is_not_a_difference_unless_it_is_core(tmp_path):
    root = _runs(tmp_path)
    _edit(root / "figure3_weights" / "cl,seed=0", **{"data.n_negatives": None})  # an older run
    assert setup_differences(load_runs(root).config, ["objective"]) == {}
    _edit(root / "figure3_weights" / "cl,seed=0", **{"train.max_steps": 300})  # core: steps
    assert set(setup_differences(load_runs(root).config, ["objective"])) == {"train.max_steps"}


def test_bookkeeping_is_not_a_setup(tmp_path):
    root = _runs(tmp_path)
    _edit(root / "figure3_weights" / "cl,seed=0", **{"logger.name": "wandb", "output_root": "/else",
                                                     "eval.batch_size": 8, "trainer.devices": 2})  # fmt: skip
    assert setup_differences(load_runs(root).config, ["objective"]) == {}


def test_auto_dtype_is_compared_as_the_dtype_it_chose(tmp_path):
    root = _runs(tmp_path, **{"model.dtype": "auto"})
    _edit(root / "figure3_weights" / "cl,seed=0", **{"model.dtype": "float32"})
    assert set(setup_differences(load_runs(root).config, ["objective"])) == {"model.dtype"}
    for run in root.glob("*/*"):  # run.json says what auto chose: float32 on a machine without bf16 units
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**info, "model_dtype": "float32"}))
    assert setup_differences(load_runs(root).config, ["objective"]) == {}
    info = json.loads((root / "figure3_weights" / "sft,seed=2" / "run.json").read_text())
    (root / "figure3_weights" / "sft,seed=2" / "run.json").write_text(json.dumps({**info, "model_dtype": "bfloat16"}))
    assert setup_differences(load_runs(root).config, ["objective"]) == {"model_dtype": {"float32": 5, "bfloat16": 1}}


def test_tables_refuse_runs_of_two_setups_instead_of_averaging_them(tmp_path):
    arms = {("table5_precision", "fp16"): {"weight.dtype": "float16"},
            ("table5_precision", "fp32"): {"weight.dtype": "float32"}}  # fmt: skip
    root = _runs(tmp_path, arms)
    assert set(seed_summary(load_runs(root), ["weight.dtype"])["n"]) == {3}
    _edit(root / "table5_precision" / "fp16,seed=0", **{"train.max_steps": 6})
    with pytest.raises(AnalysisError, match=r"train\.max_steps .*not one setup, so no table by weight\.dtype"):
        seed_summary(load_runs(root), ["weight.dtype"])


def test_figure3_reads_the_finished_url_runs_of_one_setup_each_counted_once(tmp_path):
    root = _runs(tmp_path)
    runs = load_runs(root)
    summary = weight_summary(runs).set_index(["side", "weight", "computed_in"])
    # a killed run with a partial history, and a native-loss run: neither is Figure 3's
    killed = root / "figure3_weights" / "cl,seed=9"
    native = root / "figure2_native" / "native,seed=0"
    for extra, status, loss in ((killed, "running", "url"), (native, "finished", "native_infonce")):
        extra.mkdir(parents=True)
        cfg = yaml.safe_load((root / "figure3_weights" / "cl,seed=0" / "config.yaml").read_text())
        cfg.update(seed=9, loss=loss, experiment_name=extra.parent.name)
        (extra / "config.yaml").write_text(yaml.safe_dump(cfg))
        (extra / "run.json").write_text(json.dumps({"run_id": str(extra), "status": status}))
        pd.DataFrame({"step": [1, 2], "w_pos_mean": [5.0, 5.0], "w_neg_mean": [5.0, 5.0]}).to_csv(
            extra / "history.csv", index=False)
    with_extras = load_runs(root)
    assert set(objective_runs(with_extras).ids) == set(runs.ids)
    pd.testing.assert_frame_equal(weight_summary(with_extras).set_index(["side", "weight", "computed_in"]), summary)
    # each run's mean over its steps, then over runs: a run logging twice the steps weighs the same
    curves = pd.read_csv(root / "figure3_weights" / "cl,seed=0" / "history.csv")
    pd.concat([curves, curves.assign(step=curves["step"] + 8)]).to_csv(
        root / "figure3_weights" / "cl,seed=0" / "history.csv", index=False)
    means = [pd.read_csv(p / "history.csv")["w_pos_mean"].mean() for p in (root / "figure3_weights").glob("cl,seed=[0-2]")]
    assert weight_summary(load_runs(root)).set_index(["side", "weight", "computed_in"]).loc[
        ("positives", "cl", "its own training"), "all steps"] == pytest.approx(sum(means) / 3)
    _edit(root / "figure3_weights" / "cl,seed=1", **{"data.n_negatives": 16})
    with pytest.raises(ValueError, match=r"data\.n_negatives"):
        weight_summary(load_runs(root))


def test_figure5_points_are_the_tables_finished_runs_one_per_seed(tmp_path):
    import shutil

    from urlkit.analysis.figures import metric_by, metric_grid

    arms = {("figure5_negatives", f"{o},N={n}"): {"objective": o, "data.n_negatives": n}
            for o in ("sft", "cl") for n in (1, 16)}  # fmt: skip
    root = write_arms(tmp_path / "runs", arms, {}, seeds=3, steps=4)
    for config in root.rglob("config.yaml"):
        _edit(config.parent, **{"weight.temperature": 1.0})
    # a run that failed after writing its metrics, and seed 0 of another arm run twice
    for name, status, ndcg in (("sft,N=1,seed=0", "failed", 0.99), ("cl,N=16,seed=0", "finished", 0.05)):
        source = root / "figure5_negatives" / name
        extra = source.with_name(name + "_again")
        shutil.copytree(source, extra)
        (extra / "run.json").write_text(json.dumps({"run_id": f"{name}/again", "status": status}))
        (extra / "metrics.json").write_text(json.dumps({"test/ndcg@10": ndcg}))
    runs = load_runs(root)
    table = seed_summary(runs, ["objective", "data.n_negatives"]).set_index(["objective", "data.n_negatives"])
    expected = sorted(zip(table.index.get_level_values(1), table["mean"], strict=True))

    def points(ax):  # the (x, mean) of each drawn line (a curve per objective)
        lines = [line for line in ax.lines if len(line.get_xdata()) == 2]
        return sorted((int(x), y) for line in lines for x, y in zip(*line.get_data(), strict=True))

    for fig in (metric_by(runs, "data.n_negatives"), metric_grid(runs, "data.n_negatives", ["test/ndcg@10"])):
        drawn = points(fig.axes[0])
        assert [x for x, _ in drawn] == [x for x, _ in expected]
        assert [y for _, y in drawn] == pytest.approx([y for _, y in expected])
