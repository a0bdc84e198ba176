"""urlkit.analysis from W&B, through a fake ``wandb.Api`` that serves the real tiny runs.

The fake holds what W&B would hold for each run: the config the WandbLogger logged, the
summary (final metrics), and the history rows as Lightning logs them (``train/<metric>``
with ``trainer/global_step``). It has no ``history()`` (the sampled one): the loader must use
``scan_history()``. The W&B tables must equal those read from the run directories.
"""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from helpers.analysis_runs import shared_runs

from urlkit.analysis import AnalysisError, find_run_dirs, load_runs


class FakeRun:
    def __init__(self, run_dir, sweep_locked: bool = False):
        info = json.loads((run_dir / "run.json").read_text())
        self.id, self.name, self.state = info["run_id"], run_dir.name, "finished"
        self.url = f"https://wandb.ai/ent/proj/runs/{self.id}"
        self.config = {
            "_wandb": {"cli_version": "0.0"},
            **yaml.safe_load((run_dir / "config.yaml").read_text()),
        }
        if sweep_locked:  # a swept key keeps the sweep's value, the logger's nested dict is dropped
            self.config["weight"] = self.config["weight"]["name"]
        self.summary = {
            **json.loads((run_dir / "metrics.json").read_text()),
            "_runtime": 3.0,
            "train/loss": 0.1,
        }
        with (run_dir / "history.csv").open() as f:
            self._rows = [
                {"_step": i, "trainer/global_step": int(r["step"]), **{f"train/{k}": float(v) for k, v in r.items() if k != "step"}}
                for i, r in enumerate(csv.DictReader(f))
            ]  # fmt: skip
        self._rows.append({"_step": len(self._rows), "train/w_pos_hist": {"_type": "histogram"}})

    def scan_history(self):
        return iter(self._rows)


class FakeSweep:
    def __init__(self, runs):
        self.runs = runs


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.asked = []

    def runs(self, path, **kwargs):
        self.asked.append(("runs", path))
        return list(self._runs)

    def sweep(self, path):
        self.asked.append(("sweep", path))
        return FakeSweep(self._runs[:2])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def test_wandb_project_gives_the_same_tables_as_the_run_directories(runs_dir, monkeypatch):
    import wandb

    api = FakeApi([FakeRun(d) for d in find_run_dirs(runs_dir)])
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: api)
    remote, local = load_runs("wandb:ent/proj"), load_runs(runs_dir)
    assert api.asked == [("runs", "ent/proj")]
    assert sorted(remote.ids) == sorted(local.ids)

    columns = [
        "weight.name",
        "direction.name",
        "objective",
        "seed",
        "data.n_negatives",
        "experiment_name",
        "steps",
    ]
    by_id = lambda t: t.set_index("run_id").sort_index()  # noqa: E731
    assert by_id(remote.config)[columns].equals(by_id(local.config)[columns])
    assert "_wandb.cli_version" not in remote.config

    key = ["run_id", "step", "metric"]
    assert (
        remote.history.sort_values(key)
        .reset_index(drop=True)
        .equals(local.history.sort_values(key).reset_index(drop=True))
    )
    metrics = sorted(c for c in local.metrics.columns if c != "run_id")
    assert by_id(remote.metrics)[metrics].equals(by_id(local.metrics)[metrics])
    test_rows = remote.evals[remote.evals["split"] == "test:bm25"]
    assert set(test_rows["metric"]) == {
        m.rsplit("/", 1)[1] for m in metrics if m.startswith("bm25/")
    }


def test_wandb_sweep_source_and_sweep_locked_config(runs_dir):
    api = FakeApi([FakeRun(d, sweep_locked=True) for d in find_run_dirs(runs_dir)])
    runs = load_runs("wandb-sweep:ent/proj/abc123", api=api)
    assert api.asked == [("sweep", "ent/proj/abc123")] and len(runs) == 2
    # the locked key stays readable as the choice; the loader does not invent weight.name
    assert set(runs.config["weight"]) <= {"sft", "cl"} and "weight.name" not in runs.config


def test_bad_wandb_sources_are_clear_errors():
    with pytest.raises(AnalysisError, match="wandb:<entity>/<project>"):
        load_runs("wandb:only-entity", api=FakeApi([]))
    with pytest.raises(AnalysisError, match="no runs"):
        load_runs("wandb:ent/empty", api=FakeApi([]))

    class Unreachable(FakeApi):
        def runs(self, path, **kwargs):
            raise ConnectionError("api.wandb.ai unreachable")

    with pytest.raises(AnalysisError, match="could not list the runs: api.wandb.ai unreachable"):
        load_runs("wandb:ent/proj", api=Unreachable([]))


def test_a_resumed_runs_relogged_steps_count_once_as_in_its_history_csv(tmp_path):
    """Killed after its step-2 checkpoint with steps 3-4 logged, then resumed: W&B holds steps
    3-4 twice under one run id (the resumed attempt's values last), history.csv once."""
    run = tmp_path / "runs" / "resumed"
    run.mkdir(parents=True)
    config = {"experiment_name": "figure3_weights", "seed": 0, "loss": "url",
              "weight": {"name": "sft"}, "direction": {"name": "sft"}, "data": {"name": "wordsense"}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "run.json").write_text(json.dumps({"run_id": "abcd1234", "status": "finished"}))
    (run / "metrics.json").write_text(json.dumps({"test/ndcg@10": 0.5}))
    final = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.5}
    (run / "history.csv").write_text(
        "step,w_pos_mean\n" + "".join(f"{s},{w}\n" for s, w in final.items())
    )
    fake = FakeRun(run)
    killed = [(1, 0.9), (2, 0.8), (3, 0.71), (4, 0.61)]  # a GPU's last bits differ on replay
    resumed = [(3, 0.7), (4, 0.6), (5, 0.5)]
    fake._rows = [
        {"_step": i, "trainer/global_step": s, "train/w_pos_mean": w, "dev/ndcg@10": w / 2}
        for i, (s, w) in enumerate(killed + resumed)
    ]
    remote, local = load_runs("wandb:ent/proj", api=FakeApi([fake])), load_runs(tmp_path / "runs")
    key = ["run_id", "step", "metric"]
    assert (
        remote.history.sort_values(key)
        .reset_index(drop=True)
        .equals(local.history.sort_values(key).reset_index(drop=True))
    )
    dev = remote.evals[remote.evals["split"] == "dev"]
    assert list(dev["step"]) == [1, 2, 3, 4, 5] and list(dev["value"]) == [0.45, 0.4, 0.35, 0.3, 0.25]


def test_a_tau_locked_by_the_sweep_file_reads_as_the_number_it_trained_with(tmp_path):
    """`wandb sweep sweeps/table6_tau.yaml` reads `values: [1e-2, 1e-3, 1e-4]` with YAML 1.1:
    strings, which the sweep locks into each run's config ("weight.tau": "1e-3") over the
    float the run logged; the tau table and its findings must still find the runs."""
    from helpers.synthetic_runs import write_arms

    from urlkit.analysis import probe_table
    from urlkit.analysis.findings import TAU_ARMS, check_findings
    from urlkit.grids import SWEEPS_DIR, read_sweep
    from urlkit.training.loggers import flat_config

    taus = read_sweep(SWEEPS_DIR / "table6_tau.yaml")["parameters"]["weight.tau"]["values"]
    assert taus == ["1e-2", "1e-3", "1e-4"]  # what W&B locks: strings, not numbers
    arms = {("table6_tau", label): {"weight.name": "tau_mask", **where} for label, where in TAU_ARMS.items()}
    root = write_arms(tmp_path / "runs", arms, {("table6_tau", "tau=1e-3"): 5.0},
                      queries=10, steps=3, seed_sd=0.3, query_sd=1.0)  # fmt: skip
    fakes = []
    for run_dir in find_run_dirs(root):
        fake = FakeRun(run_dir)
        fake.config = {"_wandb": {}, **flat_config(fake.config)}
        fake.config["weight.tau"] = next(t for t in taus if float(t) == fake.config["weight.tau"])
        fakes.append(fake)
    remote, local = load_runs("wandb:ent/proj", api=FakeApi(fakes)), load_runs(root)
    tables = [probe_table(r, paper="table6_tau") for r in (remote, local)]
    assert list(tables[0]["n"]) == [3, 3, 3] and tables[0].equals(tables[1])
    verdicts = check_findings(remote, only=["Appendix B.2"])
    assert [v.status for v in verdicts] == ["holds", "holds"], [str(v) for v in verdicts]
    assert [round(v.effect, 6) for v in verdicts] == [5.0, 5.0]


def test_the_overrides_a_sweep_locks_into_the_config_are_not_setups(tmp_path):
    """A W&B sweep run's config holds its sweep parameters as keys beside the logged config:
    `experiment`, `+objective` (sweeps/figure3_weights.yaml), `weight`, `direction` (Table 1's).
    They say how the run was launched; Figure 2 pools two sweeps (figure3_weights and
    figure2_native) and must not read their different `experiment` and `+objective` as two
    setups."""
    from helpers.synthetic_runs import write_arms

    from urlkit.analysis.findings import check_findings
    from urlkit.training.loggers import flat_config

    arms = {("figure3_weights", "objective=sft"): {"objective": "sft"},
            ("figure2_native", "objective=native_sft"): {"objective": "native_sft"},
            ("table1_weight_direction", "weight=sft,direction=sft"): {"weight.name": "sft", "direction.name": "sft"},
            ("table1_weight_direction", "weight=cl,direction=cl"): {"weight.name": "cl", "direction.name": "cl"}}  # fmt: skip
    root = write_arms(tmp_path / "runs", arms, {}, queries=10, steps=3)
    fakes = []
    for run_dir in find_run_dirs(root):
        fake = FakeRun(run_dir)
        flat = flat_config(fake.config)
        experiment, locked = flat["experiment_name"], {}
        if experiment == "table1_weight_direction":
            locked = {"weight": flat["weight.name"], "direction": flat["direction.name"]}
        else:
            native = flat["loss"] if flat["loss"] != "url" else flat["weight.name"]
            locked = {"+objective": native}
        fake.config = {"_wandb": {}, **flat, "experiment": experiment, **locked, "seed": flat["seed"]}
        fakes.append(fake)
    only = ["Figure 2 (SFT)", "Table 1 (diagonal)", "Figure 3"]
    remote = check_findings(load_runs("wandb:ent/proj", api=FakeApi(fakes)), only=only)
    local = check_findings(load_runs(root), only=only)
    assert [v.status for v in remote] == [v.status for v in local], [str(v) for v in remote]
    assert "mixed setups" not in {v.status for v in remote}


def test_a_run_a_study_shared_before_it_trained_is_an_arm_of_both_experiments_from_wandb(runs_dir, tmp_path, monkeypatch):
    """A study trains a computation once and records the other experiments it serves in the
    run's experiments.txt before it trains; the config the run logs to W&B carries them, so an
    analysis from W&B selects the run for either experiment, as one from its folder does."""
    import shutil

    import wandb
    from omegaconf import OmegaConf

    from urlkit.records import EXPERIMENTS_FILE
    from urlkit.training.loggers import wandb_config

    source = find_run_dirs(runs_dir)[0]
    run_dir = tmp_path / "runs" / source.name
    shutil.copytree(source, run_dir)
    (run_dir / EXPERIMENTS_FILE).write_text("table3_random_direction\n")
    cfg = OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text()))
    own = cfg.get("experiment_name")

    logged = wandb_config(cfg, run_dir)
    assert logged["experiments"] == [*([own] if own else []), "table3_random_direction"]
    fake = FakeRun(run_dir)
    fake.config = {"_wandb": {"cli_version": "0.0"}, **logged}
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: FakeApi([fake]))
    remote, local = load_runs("wandb:ent/proj"), load_runs(tmp_path / "runs")
    assert list(local.of_experiments("table3_random_direction").ids) == [fake.id]
    assert list(remote.of_experiments("table3_random_direction").ids) == [fake.id]
    assert list(remote.of_experiments("nothing_of_it").ids) == []


@pytest.mark.timeout(120)
def test_a_finished_run_a_later_study_shares_tells_wandb_the_experiments_it_serves(runs_dir, tmp_path, monkeypatch):
    """A later study that reuses a finished run recorded the share in its experiments.txt only: the
    run, not trained again, never logged it, so W&B's record of it stayed without the experiment.
    The study now opens the W&B run again as a resumed attempt does (offline here: one more
    offline-run folder of the same id, which `wandb sync` uploads) with the config's
    ``experiments`` as the folder has them; once told, a second study tells nothing again."""
    import shutil

    from helpers.wandb_log import logged_config

    from urlkit.records import EXPERIMENTS_FILE
    from urlkit.study.plan import Planned, record_experiments

    home = tmp_path / "home"  # no key, no netrc, no W&B settings of this machine
    for name, value in {"HOME": home, "WANDB_CONFIG_DIR": home / "config", "WANDB_CACHE_DIR": home / "cache",
                        "WANDB_DATA_DIR": home / "data", "NETRC": home / ".netrc"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    source = find_run_dirs(runs_dir)[0]
    run_dir = tmp_path / "runs" / source.name
    shutil.copytree(source, run_dir)
    # as a run that logged to W&B records it: logger=wandb in its config, its W&B id in run.json
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["logger"] = {"name": "wandb", "project": "urlkit", "entity": None, "group": None, "tags": [],
                        "mode": "auto", "flush_interval_s": 2.0}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "wandb_id": "0a1b2c3d"}))
    own = [str(config["experiment_name"])] if config.get("experiment_name") is not None else []

    shared = Planned(own[0] if own else "", [], run_dir, None, "finished", ["table3_random_direction"])
    said = record_experiments([shared])
    assert (run_dir / EXPERIMENTS_FILE).read_text().split() == ["table3_random_direction"]
    (told,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert told.name.endswith("0a1b2c3d") and "0a1b2c3d" in " ".join(said)
    logged = logged_config(told / "run-0a1b2c3d.wandb")
    assert logged.get("experiments") == [*own, "table3_random_direction"], (said, sorted(logged))
    assert list(load_runs(tmp_path / "runs").of_experiments("table3_random_direction").ids) == [info["run_id"]]

    assert record_experiments([shared]) == []  # nothing new to tell
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
