"""urlkit.findings: verdicts on real tiny runs agree with the run files; the decision rules."""

from __future__ import annotations

import csv
import json
import statistics

import pandas as pd
import pytest
import yaml
from helpers.analysis_runs import shared_runs

from urlkit.analysis import Runs, find_run_dirs, load_runs
from urlkit.analysis.runs import EVAL_COLUMNS, HISTORY_COLUMNS, add_derived_columns
from urlkit.findings import FAILS, FINDINGS, HOLDS, NOT_RUN, check_findings, main


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def _verdict(runs, name):
    (verdict,) = check_findings(runs, only=[name])
    return verdict


def _synthetic(experiment, rows):
    """Runs holding only configs and a final test/ndcg@10 (to exercise the decision rules)."""
    config = pd.DataFrame(
        [
            {
                "run_id": f"r{i}",
                "experiment_name": experiment,
                **{k: v for k, v in r.items() if k != "score"},
            }
            for i, r in enumerate(rows)
        ]
    )
    metrics = pd.DataFrame(
        [{"run_id": f"r{i}", "test/ndcg@10": r["score"]} for i, r in enumerate(rows)]
    )
    return Runs(
        add_derived_columns(config),
        pd.DataFrame(columns=HISTORY_COLUMNS),
        pd.DataFrame(columns=EVAL_COLUMNS),
        metrics,
    )


def test_table1_verdict_agrees_with_the_metrics_files(runs_dir):
    by_weight = {"sft": [], "cl": []}
    for d in find_run_dirs(runs_dir / "table1_weight_direction"):
        weight = yaml.safe_load((d / "config.yaml").read_text())["weight"]["name"]
        by_weight[weight].append(json.loads((d / "metrics.json").read_text())["test/ndcg@10"])
    verdict = _verdict(load_runs(runs_dir), "Table 1")
    expected = (
        HOLDS if statistics.mean(by_weight["sft"]) > statistics.mean(by_weight["cl"]) else FAILS
    )
    assert verdict.status == expected
    assert f"weight.name=sft: {100 * statistics.mean(by_weight['sft']):.2f}" in verdict.detail


def test_figure3_verdict_agrees_with_the_history_files(runs_dir):
    curves = {}
    for d in find_run_dirs(runs_dir / "table1_weight_direction"):
        weight = yaml.safe_load((d / "config.yaml").read_text())["weight"]["name"]
        with (d / "history.csv").open() as f:
            for row in csv.DictReader(f):
                for side in ("pos", "neg"):
                    curves.setdefault((weight, side, int(row["step"])), []).append(
                        float(row[f"w_{side}_mean"])
                    )
    steps = sorted({s for _, _, s in curves})
    below = {
        side: sum(
            statistics.mean(curves[("cl", side, s)]) < statistics.mean(curves[("sft", side, s)])
            for s in steps
        )
        / len(steps)
        for side in ("pos", "neg")
    }
    verdict = _verdict(load_runs(runs_dir), "Figure 3")
    assert verdict.status == (HOLDS if min(below.values()) >= 0.9 else FAILS)
    assert f"cl below at {below['pos']:.0%} of steps" in verdict.detail


def test_findings_without_their_runs_say_not_run(runs_dir):
    verdicts = {v.finding: v for v in check_findings(load_runs(runs_dir))}
    assert [v.finding for v in verdicts.values()] == [f.name for f in FINDINGS]
    for name in ("Table 2", "Table 3", "Table 5", "Appendix B.2", "Table 15", "Figure 4"):
        assert verdicts[name].status == NOT_RUN and "no runs of experiment" in verdicts[name].detail
    # figure5 runs exist but with a single count of negatives
    assert (
        verdicts["Figure 5"].status == NOT_RUN
        and "need at least 2 counts" in verdicts["Figure 5"].detail
    )
    assert (
        verdicts["Figure 2"].status in (HOLDS, FAILS)
        and "loss_sft_native" in verdicts["Figure 2"].detail
    )


def test_cli_prints_one_verdict_per_finding(runs_dir, capsys):
    assert main([str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("6 runs from") and len(lines) == 1 + len(FINDINGS)
    assert all(line.startswith("- ") and line.rstrip(")").count("(") >= 1 for line in lines[1:])


@pytest.mark.parametrize(
    "scores, status",
    [({("sft", "sft"): 50, ("sft", "rand"): 48, ("cl", "cl"): 45, ("cl", "rand"): 47}, HOLDS),
     ({("sft", "sft"): 50, ("sft", "rand"): 52, ("cl", "cl"): 45, ("cl", "rand"): 47}, FAILS)],
)  # fmt: skip
def test_table3_rule(scores, status):
    rows = [
        {"weight.name": w, "direction.name": d, "seed": s, "score": v / 100}
        for (w, d), v in scores.items()
        for s in (0, 1)
    ]
    assert _verdict(_synthetic("table3_random_direction", rows), "Table 3").status == status


def test_table2_table6_table15_rules():
    table2 = {"base": 0.40, "tau_mask": 0.50, "cl": 0.48, "base*sft": 0.52}
    rows = [{"weight.name": w, "direction.name": "sft", "score": v} for w, v in table2.items()]
    assert _verdict(_synthetic("table2_weight_properties", rows), "Table 2").status == HOLDS
    rows[2]["score"] = 0.60  # cl best: base*sft is no longer best
    assert _verdict(_synthetic("table2_weight_properties", rows), "Table 2").status == FAILS

    rows = [
        {"weight.name": "tau_mask", "direction.name": "sft", "weight.tau": t, "score": v}
        for t, v in ((0.01, 0.5), (0.001, 0.6), (0.0001, 0.55))
    ]
    assert _verdict(_synthetic("table6_tau", rows), "Appendix B.2").status == HOLDS
    assert _verdict(_synthetic("table6_tau", rows[:2]), "Appendix B.2").status == NOT_RUN

    head = {("sft", False): 0.50, ("sft", True): 0.50, ("cl", False): 0.45, ("cl", True): 0.47}
    rows = [
        {"weight.name": o, "direction.name": o, "head.trainable": t, "score": v}
        for (o, t), v in head.items()
    ]
    assert _verdict(_synthetic("table15_lm_head", rows), "Table 15").status == HOLDS


def test_figure4_and_figure5_rules():
    flat = [
        {
            "weight.name": "sft",
            "direction.name": "sft",
            "head.num_tokens": k,
            "score": 0.500 + 0.0005 * k,  # spread 0.7 points: within the 1-point allowance
        }
        for k in (2, 4, 8, 16)
    ]
    assert _verdict(_synthetic("figure4_tokens", flat), "Figure 4").status == HOLDS
    steep = [{**r, "score": 0.40 + 0.02 * r["head.num_tokens"]} for r in flat]
    assert _verdict(_synthetic("figure4_tokens", steep), "Figure 4").status == FAILS

    def negatives(sft, cl):
        return [
            {"weight.name": o, "direction.name": o, "data.n_negatives": n, "score": f(n)}
            for o, f in (("sft", sft), ("cl", cl))
            for n in (1, 4, 16)
        ]

    assert (
        _verdict(
            _synthetic(
                "figure5_negatives", negatives(lambda n: 0.5 + n / 100, lambda n: 0.4 + n / 100)
            ),
            "Figure 5",
        ).status
        == HOLDS
    )
    crossing = negatives(lambda n: 0.5 + n / 100, lambda n: 0.45 + n / 50)  # CL overtakes at 16
    assert _verdict(_synthetic("figure5_negatives", crossing), "Figure 5").status == FAILS
    missing = negatives(lambda n: 0.5, lambda n: 0.4)[:-1]
    verdict = _verdict(_synthetic("figure5_negatives", missing), "Figure 5")
    assert verdict.status == NOT_RUN and "objective=cl,data.n_negatives=16" in verdict.detail
