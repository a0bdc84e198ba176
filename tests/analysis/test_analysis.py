"""urlkit.analysis on real tiny runs: the loader (local and W&B), the probing tables, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pandas as pd
import pytest
import yaml
from helpers.analysis_runs import RUNS, STEPS, shared_runs

from urlkit.analysis import AnalysisError, find_run_dirs, load_runs, paper_reference, probe_table
from urlkit.analysis.paper import PAPER_DIR
from urlkit.paths import REPO_ROOT


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return shared_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(runs_dir):
    return load_runs(runs_dir)


def _final(run_dir, metric="test/ndcg@10"):
    return json.loads((run_dir / "metrics.json").read_text())[metric]


def _dirs_of(runs_dir, experiment, **config):
    """Run dirs of an experiment whose config.yaml has the given (dotted) values, read directly."""
    found = []
    for d in find_run_dirs(runs_dir / experiment):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        if all(_get(cfg, k) == v for k, v in config.items()):
            found.append(d)
    return found


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def test_loader_reads_every_run_directory_into_tidy_tables(runs_dir, runs):
    assert len(runs) == len(RUNS)
    assert set(runs.config["experiment_name"]) == {e for e, _ in RUNS}
    assert set(runs.config["status"]) == {"finished"}
    assert set(runs.config["steps"]) == {STEPS}
    by_id = runs.config.set_index("run_id")
    for run_dir in find_run_dirs(runs_dir):
        info = json.loads((run_dir / "run.json").read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        row = by_id.loc[info["run_id"]]
        assert row["path"] == str(run_dir)
        assert (
            row["weight.name"] == cfg["weight"]["name"]
            and row["data.n_negatives"] == cfg["data"]["n_negatives"]
        )
        native = cfg["weight"]["name"] == cfg["direction"]["name"]
        assert row["objective"] == (
            cfg["weight"]["name"]
            if native
            else f"{cfg['weight']['name']}/{cfg['direction']['name']}"
        )
        # history: every number of history.csv, as (step, metric) -> value
        with (run_dir / "history.csv").open() as f:
            rows = list(csv.DictReader(f))
        mine = runs.history[runs.history["run_id"] == info["run_id"]]
        assert sorted(mine["step"].unique()) == [int(r["step"]) for r in rows]
        table = mine.set_index(["step", "metric"])["value"]
        for r in rows:
            for key in ("loss", "w_pos_mean", "w_cl_neg", "loss_sft_native"):
                assert table[(int(r["step"]), key)] == pytest.approx(float(r[key]))
        # final metrics and the test evaluation rows
        metrics = json.loads((run_dir / "metrics.json").read_text())
        saved = runs.metrics.set_index("run_id").loc[info["run_id"]]
        assert all(saved[k] == pytest.approx(v) for k, v in metrics.items())
        evals = runs.evals[
            (runs.evals["run_id"] == info["run_id"]) & (runs.evals["split"] == "test:reranker")
        ]
        assert evals.set_index("metric").loc["ndcg@10", "value"] == pytest.approx(
            metrics["test/ndcg@10"]
        )


def test_select_filters_on_dotted_config_columns_and_lists(runs):
    sft = runs.select({"weight.name": "sft"}, experiment_name="table1_weight_direction")
    assert len(sft) == 2 and set(sft.config["seed"]) == {0, 1}
    assert set(sft.history["run_id"]) == set(sft.ids) and set(sft.metrics["run_id"]) == set(sft.ids)
    assert len(runs.select(experiment_name=["figure5_negatives", "figure4_tokens"])) == 2
    assert len(runs.select({"no.such.column": 1})) == 0


def test_probe_table_joins_the_paper_and_computes_mean_std_over_seeds(runs_dir, runs):
    table1 = runs.select(experiment_name="table1_weight_direction")
    table = probe_table(table1, paper="table1_weight_direction")
    paper = pd.read_csv(PAPER_DIR / "table1_weight_direction.csv")
    # the paper's rows, in its order, each with its MRB value
    assert list(zip(table["weight.name"], table["direction.name"], strict=True)) == list(
        zip(paper["weight"], paper["direction"], strict=True)
    )
    assert list(table["paper"]) == list(paper["mrb_avg"])
    for weight in ("sft", "cl"):
        values = [
            100 * _final(d)
            for d in _dirs_of(runs_dir, "table1_weight_direction", **{"weight.name": weight})
        ]
        row = table[(table["weight.name"] == weight) & (table["direction.name"] == weight)].iloc[0]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))
        assert row["difference"] == pytest.approx(row["mean"] - row["paper"])
    # settings nobody ran stay, with n = 0
    assert set(table.loc[table["weight.name"] != table["direction.name"], "n"]) == {0}
    first = table.iloc[0]
    assert table["delta"].iloc[-1] == pytest.approx(table["mean"].iloc[-1] - first["mean"])
    assert table["paper_delta"].iloc[-1] == pytest.approx(
        paper["mrb_avg"].iloc[-1] - paper["mrb_avg"].iloc[0]
    )


def test_paper_tables_translate_to_run_columns():
    tau = paper_reference("table6_tau")
    assert list(tau["weight.tau"]) == [1e-2, 1e-3, 1e-4] and set(tau["weight.name"]) == {"tau_mask"}
    head = paper_reference("table15_lm_head")
    assert list(head["head.trainable"]) == [False, True, False, True]
    precision = paper_reference("table5_precision")
    assert list(precision["weight.dtype"]) == ["float16", "float32"]
    table2 = paper_reference("table2_weight_properties")
    assert list(table2["weight.name"]) == ["base", "tau_mask", "cl", "base*sft"]


def test_probe_table_by_any_columns_without_paper(runs):
    table = probe_table(runs, by=["objective", "data.n_negatives"])
    row = table[(table["objective"] == "cl") & (table["data.n_negatives"] == 1)].iloc[0]
    assert row["n"] == 1 and pd.isna(row["std"])
    with pytest.raises(KeyError, match="no run column"):
        probe_table(runs, by=["weight.nam"])


def test_a_copied_run_is_an_error_not_a_double_count(runs_dir, tmp_path):
    one = find_run_dirs(runs_dir)[0]
    shutil.copytree(one, tmp_path / "a" / one.name)
    shutil.copytree(one, tmp_path / "b" / one.name)
    with pytest.raises(AnalysisError, match="same run id"):
        load_runs(tmp_path)


def test_bad_sources_name_the_file(runs_dir, tmp_path):
    with pytest.raises(AnalysisError, match="no run directories"):
        load_runs(tmp_path)
    with pytest.raises(AnalysisError, match="no such folder"):
        load_runs(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(find_run_dirs(runs_dir)[0], broken)
    (broken / "config.yaml").write_text("weight:\n  name: [sft\n")
    with pytest.raises(AnalysisError, match=r"broken/config.yaml line \d+"):
        load_runs(broken)
    (broken / "config.yaml").write_text("weight: {name: sft}\n")
    (broken / "history.csv").write_text("loss,w_pos_mean\n0.1,0.2\n")
    with pytest.raises(AnalysisError, match="history.csv: no 'step' column"):
        load_runs(broken)


def test_a_run_scored_on_dev_is_read_on_dev_alone(tmp_path):
    # a committed tuning run (data.test_split=dev) plus a benchmark suite's test file beside
    # its dev file: the loader reads the split the final evaluation scored, never the test file
    source = REPO_ROOT / "results" / "tuning" / "lr2e-4_steps300_seed0"
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["test_split"] == "dev"
    test_file = run_dir / "per_query" / "manpages_test_reranker.csv"
    test_file.write_text("query_id,ndcg@10\nman-1,1.0\n")
    dev = pd.read_csv(run_dir / "per_query" / "wordsense_dev_reranker.csv", dtype={"query_id": str})
    per_query = load_runs(tmp_path).per_query
    ndcg = per_query[per_query["metric"] == "ndcg@10"]
    assert sorted(ndcg["query_id"]) == sorted(dev["query_id"]) and len(ndcg) == 402
    assert ndcg["value"].mean() == pytest.approx(dev["ndcg@10"].mean())


def test_a_benchmark_suites_files_beside_the_final_evaluations_are_not_pooled(tmp_path):
    # benchmark=<suite> after training writes each suite dataset's per-query file beside the
    # final evaluation's: the per-query values are still the ones test/ndcg@10 averages
    source = REPO_ROOT / "results" / "embedded" / "figure2_native" / "objective-native_sft_seed-1"
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    for model in ("reranker", "bm25"):
        suite = pd.DataFrame({"query_id": [f"man-{i}" for i in range(300)], "ndcg@10": 0.0})
        suite.to_csv(run_dir / "per_query" / f"manpages_test_{model}.csv", index=False)
    own = pd.read_csv(run_dir / "per_query" / "wordsense_test_reranker.csv", dtype={"query_id": str})
    per_query = load_runs(tmp_path).per_query
    ndcg = per_query[per_query["metric"] == "ndcg@10"]
    assert sorted(ndcg["query_id"]) == sorted(own["query_id"])
    assert ndcg["value"].mean() == pytest.approx(_final(run_dir))


def test_a_dataset_named_like_a_number_keeps_its_per_query_values(tmp_path):
    # eval.csv's dataset "007" read as the integer 7 named no per-query file: the run's per-query
    # values were silently empty, and the findings fell back to the final metric alone
    source = REPO_ROOT / "results" / "embedded" / "figure2_native" / "objective-native_sft_seed-1"
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    evals = pd.read_csv(run_dir / "eval.csv", dtype={"dataset": str})
    evals["dataset"] = evals["dataset"].replace("wordsense", "007")
    evals.to_csv(run_dir / "eval.csv", index=False)
    for file in (run_dir / "per_query").glob("wordsense_*"):
        file.rename(file.with_name(file.name.replace("wordsense_", "007_", 1)))
    own = pd.read_csv(run_dir / "per_query" / "007_test_reranker.csv", dtype={"query_id": str})
    per_query = load_runs(tmp_path).per_query
    ndcg = per_query[per_query["metric"] == "ndcg@10"]
    assert sorted(ndcg["query_id"]) == sorted(own["query_id"])


@pytest.mark.timeout(120)
def test_the_tuning_table_is_rebuilt_from_the_committed_runs():
    import subprocess
    import sys

    root = REPO_ROOT / "results" / "tuning"
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "tune_defaults_table.py"), str(root)],
        capture_output=True, text=True, check=True, timeout=100,
    ).stdout  # fmt: skip
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| lr ")}
    assert set(rows) == {"lr 2e-4, 300 steps", "lr 4e-4, 300 steps", "lr 4e-4, 200 steps", "lr 2e-4, 450 steps"}
    seeds = sorted(root.glob("lr2e-4_steps300_seed*"))
    mean = statistics.mean(
        100 * pd.read_csv(d / "per_query" / "wordsense_dev_reranker.csv")["ndcg@10"].mean() for d in seeds
    )
    assert f"| {mean:.2f} |" in rows["lr 2e-4, 300 steps"] and len(seeds) == 3


def test_figure3_curves_are_each_familys_own_objective_not_the_mixed_pairs():
    """URL(sft,cl) trains with the sft weight but is not SFT, and a native loss is Figure 2's
    (the same gradient: its curve is URL's again): the committed runs (3 URL + 3 native per
    family, 6 mixed pairs) give each curve its 3 URL runs, as figures/tables/ says."""
    from urlkit.analysis.figures import weight_summary

    summary = weight_summary(load_runs(REPO_ROOT / "results" / "embedded"))
    assert set(summary["runs"]) == {3}
    committed = pd.read_csv(REPO_ROOT / "figures" / "tables" / "figure3_weights_summary.csv")
    merged = summary.merge(committed, on=["side", "weight", "computed_in"], suffixes=("", "_committed"))
    assert len(merged) == 8 and (merged["all steps"] - merged["all steps_committed"]).abs().max() < 1e-3


def test_table1_reads_its_diagonal_from_figure3_weights_as_the_findings_do():
    from urlkit.analysis.findings import TABLE_EXPERIMENTS

    runs = load_runs(REPO_ROOT / "results" / "embedded")
    name = "table1_weight_direction"
    table = probe_table(runs.select(experiment_name=list(TABLE_EXPERIMENTS[name])), paper=name)
    assert list(table["n"]) == [3, 3, 3, 3]  # the diagonal too (it was n=0 from table1's runs alone)
    assert table.loc[0, "mean"] == pytest.approx(62.53, abs=0.01)  # figures/tables/table1_embedded.md


def test_a_misspelt_metric_is_an_error_naming_it_not_a_table_of_no_runs():
    # a notebook's metric="test/ndcg10" printed the paper's table with n = 0 in every row
    runs = load_runs(REPO_ROOT / "results" / "embedded" / "table1_weight_direction")
    assert len(runs)
    with pytest.raises(KeyError, match=r"no finished run has the final metric 'test/ndcg10' \(final metrics: .*test/ndcg@10"):
        probe_table(runs, metric="test/ndcg10", paper="table1_weight_direction")
    assert probe_table(runs, metric="test/ndcg@10", paper="table1_weight_direction")["n"].sum() > 0
