"""urlkit.findings: effects, intervals and verdicts on run directories with known effects.

Synthetic run directories (tests/helpers/synthetic_runs.py) hold what a training run writes,
with per-query metrics and per-step weights drawn around a known truth: noise only -> every
claim inconclusive; a planted effect of the claimed sign -> holds; the opposite sign -> fails;
a missing arm -> not run (naming it). Real tiny runs check that the numbers are the run files'.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.analysis_runs import shared_runs
from helpers.synthetic_runs import write_arms

from urlkit.analysis import find_run_dirs, load_runs
from urlkit.analysis.findings import EQUIVALENT, FINDINGS, Finding, check
from urlkit.findings import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, check_findings, main

BY_NAME = {f.name: f for f in FINDINGS}


def _key(finding: Finding, label: str) -> tuple[str, str]:
    where = finding.arms[label]
    return finding.experiments[0], ",".join(f"{k}={v}" for k, v in where.items())


def _arms(finding: Finding, drop: str | None = None) -> dict:
    return {_key(finding, label): where for label, where in finding.arms.items() if label != drop}


def _planted(finding: Finding, amount: float) -> dict:
    """``amount`` on every arm the claim puts on the winning side (positive coefficient)."""
    return {_key(finding, label): amount for label, c in finding.weights.items() if c > 0}


@pytest.fixture(scope="module")
def noise_only(tmp_path_factory):
    arms = {}
    for finding in FINDINGS:
        arms.update(_arms(finding))
    return load_runs(write_arms(tmp_path_factory.mktemp("noise"), arms, planted={}))


def test_noise_only_every_claim_is_inconclusive(noise_only):
    verdicts = check_findings(noise_only)
    assert len(verdicts) == len(FINDINGS)
    for v in verdicts:
        assert v.status == INCONCLUSIVE, str(v)
        assert abs(v.effect) < 1e-9  # arms centred: they differ only by noise
        assert v.estimate.low < 0 < v.estimate.high
        assert v.estimate.seeds_resampled and v.estimate.seeds_paired


@pytest.mark.parametrize("name", [f.name for f in FINDINGS])
def test_planted_effect_holds_and_its_opposite_fails(name, tmp_path):
    finding = BY_NAME[name]
    if finding.kind == EQUIVALENT:  # "the same": no difference holds, a large one fails
        cases = [(0.0, HOLDS, 0.3), (25.0, FAILS, 0.3)]
    else:
        cases = [(12.0, HOLDS, 15.0), (-12.0, FAILS, 15.0)]
    for amount, expected, query_sd in cases:
        # 5 seeds of 80 queries: the query-by-seed noise (sd 15) leaves each seed's mean ~1.7
        # points off, which a t interval over 3 seeds (t = 4.3) could not tell from 12 points
        root = write_arms(tmp_path / f"{amount}", _arms(finding), _planted(finding, amount),
                          query_sd=query_sd, weight_sd=0.01, seed_sd=0.1, seeds=5, queries=80)  # fmt: skip
        verdict = check(finding, load_runs(root))
        assert verdict.status == expected, str(verdict)
        planted = amount * sum(c for c in finding.weights.values() if c > 0)
        scale = 100 if finding.column else 1  # weights carry a hundredth of the points
        assert verdict.effect == pytest.approx(planted / scale, abs=1e-9)
        assert verdict.estimate.low <= verdict.effect <= verdict.estimate.high


@pytest.mark.parametrize("name", ["Table 1 (Delta_W > Delta_D)", "Figure 2 (SFT)", "Figure 3 (W+)",
                                  "Table 15 (CL gains more)", "Figure 5 (SFT > CL)"])  # fmt: skip
def test_a_missing_arm_is_not_run_and_named(name, tmp_path):
    finding = BY_NAME[name]
    dropped = list(finding.arms)[-1]
    root = write_arms(tmp_path, _arms(finding, drop=dropped), _planted(finding, 12.0))
    verdict = check(finding, load_runs(root))
    assert verdict.status == NOT_RUN and dropped in verdict.detail, str(verdict)


def test_more_queries_shrink_the_detectable_effect(tmp_path):
    finding = BY_NAME["Table 1 (diagonal)"]
    detectable = []
    for queries in (20, 320):
        # little seed-to-seed drift: what is left of each seed's mean is query noise, which shrinks
        root = write_arms(tmp_path / str(queries), _arms(finding), {}, queries=queries, seed_sd=0.1)
        detectable.append(check(finding, load_runs(root)).estimate.detectable)
    assert detectable[1] < detectable[0] / 2  # ~ 1/sqrt(16) of the query noise


def test_one_seed_says_its_interval_lacks_seed_noise(tmp_path):
    finding = BY_NAME["Table 1 (diagonal)"]
    root = write_arms(tmp_path, _arms(finding), _planted(finding, 12.0), seeds=1)
    verdict = check(finding, load_runs(root))
    assert (
        not verdict.estimate.seeds_resampled and "seed noise not in the interval" in verdict.detail
    )
    assert verdict.status == INCONCLUSIVE  # even 12 points: one run of a method says nothing of its noise


def test_cli_prints_effect_interval_verdict_and_detectable_effect(noise_only, capsys):
    assert main([noise_only.source]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{len(noise_only)} runs from")
    assert len(lines) == 1 + len(FINDINGS)
    for line in lines[1:]:
        assert (
            ": inconclusive (effect " in line and "95% interval [" in line and "detectable " in line
        )


def test_cli_names_a_metric_or_finding_that_is_not_there(tmp_path, capsys):
    # a misspelt metric made every claim "not run (no run of ...)" though the runs were there,
    # a misspelt --only printed no claim at all; both exited 0
    finding = BY_NAME["Table 1 (diagonal)"]
    root = str(write_arms(tmp_path / "runs", _arms(finding), {}, queries=5, steps=2))
    with pytest.raises(SystemExit) as exit_:
        main([root, "--metric", "test/ndcg10"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no run in" in err and "final metric 'test/ndcg10'" in err
    assert "(final metrics: test/ndcg@10)" in err
    with pytest.raises(SystemExit) as exit_:
        main([root, "--only", "Table 1 (diag)", "Figure 3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--only 'Table 1 (diag)': no such finding" in err
    assert main([root, "--only", "Table 1 (diagonal)"]) == 0
    assert "Table 1 (diagonal): SFT beats CL" in capsys.readouterr().out


# -- real tiny runs: the numbers are the run files' ------------------------------------


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def test_diagonal_effect_is_the_mean_per_query_difference_of_the_run_files(runs_dir):
    per_weight = {"sft": [], "cl": []}
    for d in find_run_dirs(runs_dir / "table1_weight_direction"):
        weight = yaml.safe_load((d / "config.yaml").read_text())["weight"]["name"]
        (file,) = (d / "per_query").glob("*_test_reranker.csv")
        per_weight[weight].append(pd.read_csv(file)["ndcg@10"].to_numpy())
    expected = 100 * (np.mean(per_weight["sft"]) - np.mean(per_weight["cl"]))
    (verdict,) = check_findings(load_runs(runs_dir), only=["Table 1 (diagonal)"])
    assert verdict.effect == pytest.approx(expected)
    assert verdict.status in (HOLDS, FAILS, INCONCLUSIVE)
    # Table 1's mixed pairs were not run: the claims that need them say so
    (delta_w,) = check_findings(load_runs(runs_dir), only=["Table 1 (Delta_W)"])
    assert delta_w.status == NOT_RUN and "sft,cl" in delta_w.detail


def test_findings_of_unrun_experiments_say_not_run(runs_dir):
    verdicts = {v.finding: v for v in check_findings(load_runs(runs_dir))}
    for name in ("Table 2 (tau mask)", "Table 5", "Appendix B.2 (1e-3 vs 1e-2)", "Figure 4 (4 vs 2 tokens)",
                 "Figure 2 (SFT)", "Figure 5 (SFT 16 vs 1)"):  # fmt: skip
        assert verdicts[name].status == NOT_RUN, str(verdicts[name])
    assert verdicts["Figure 3 (W+)"].status != NOT_RUN  # table1's URL(sft,sft), URL(cl,cl)


def test_runs_of_different_setups_are_not_compared(tmp_path):
    """A dev-scored run, or a laptop run beside paper runs, among the arms: no verdict, named."""
    import shutil

    from urlkit.findings import MIXED

    finding = BY_NAME["Table 1 (diagonal)"]
    root = write_arms(tmp_path / "runs", _arms(finding), _planted(finding, 12.0), seeds=5, queries=80)
    assert check(finding, load_runs(root)).status == HOLDS
    config = next(root.rglob("config.yaml"))
    cfg = yaml.safe_load(config.read_text())
    cfg.setdefault("data", {})["test_split"] = "dev"
    config.write_text(yaml.safe_dump(cfg))
    verdict = check(finding, load_runs(root))
    assert verdict.status == MIXED
    assert "the runs differ in data.test_split ((not recorded): 9 runs, dev: 1 runs)" in verdict.detail
    shutil.rmtree(config.parent)  # the odd run out gone: compared again
    assert check(finding, load_runs(root)).status == HOLDS


def test_tables_count_seeds_of_finished_runs_as_the_findings_do(tmp_path):
    import json
    import shutil

    from urlkit.analysis.tables import seed_summary

    finding = BY_NAME["Table 1 (diagonal)"]
    root = write_arms(tmp_path / "runs", _arms(finding), {}, seeds=3)
    run = next(root.rglob("config.yaml")).parent
    shutil.copytree(run, run.with_name(run.name + "_again"))  # the same seed run twice
    info = json.loads((run.with_name(run.name + "_again") / "run.json").read_text())
    info["run_id"] += "x"
    (run.with_name(run.name + "_again") / "run.json").write_text(json.dumps(info))
    table = seed_summary(load_runs(root), ["weight.name", "direction.name"])
    assert set(table["n"]) == {3}  # not 4 where a seed ran twice


def test_the_first_stages_metric_is_its_own_final_metric_not_the_rerankers_per_query(tmp_path):
    """--metric bm25/test/ndcg@10: the per-query files are the reranker's; the same BM25 for
    every arm must give no effect, not the reranker's planted one."""
    import json

    finding = BY_NAME["Table 1 (diagonal)"]
    root = write_arms(tmp_path / "runs", _arms(finding), _planted(finding, 10.0), seed_sd=0.5, query_sd=2.0)
    for metrics in root.rglob("metrics.json"):
        values = json.loads(metrics.read_text())
        metrics.write_text(json.dumps({**values, "bm25/test/ndcg@10": 0.4}))
    runs = load_runs(root)
    assert check(finding, runs).status == HOLDS, str(check(finding, runs))  # the reranker effect
    verdict = check(finding, runs, metric="bm25/test/ndcg@10")
    assert verdict.effect == pytest.approx(0.0) and verdict.status == INCONCLUSIVE
    assert "1 final metric" in verdict.detail
