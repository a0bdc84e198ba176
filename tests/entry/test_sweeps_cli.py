"""``python -m urlkit.sweeps``: sweeps/ is generated from conf/experiment/, and --check says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from urlkit import sweeps
from urlkit.grids import expand, experiment_grid, parse_point, sweep_grid
from urlkit.paths import REPO_ROOT


def test_the_committed_sweep_files_are_the_generated_ones():
    out = subprocess.run([sys.executable, "-m", "urlkit.sweeps", "--check"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.fixture
def sweeps_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(sweeps, "SWEEPS_DIR", tmp_path)
    return tmp_path


def test_write_then_check_and_every_difference_is_named(sweeps_dir, capsys):
    assert sweeps.main(["--check"]) == 1  # empty folder: every file missing
    assert "table6_tau.yaml: missing for conf/experiment/table6_tau.yaml" in capsys.readouterr().err
    assert sweeps.main(["--write"]) == 0
    assert sweeps.main(["--check"]) == 0
    written = sweeps_dir / "table6_tau.yaml"
    # the generated grid is the experiment's grid, values spelled as the experiment spells them
    as_set = lambda grid: {frozenset(parse_point(p).items()) for p in grid}  # noqa: E731
    assert as_set(sweep_grid(written)) == as_set(experiment_grid("table6_tau"))
    assert "values: [1e-2, 1e-3, 1e-4]" in written.read_text()
    written.write_text(written.read_text().replace("1e-4", "1e-5"))  # a hand edit
    (sweeps_dir / "table99.yaml").write_text("name: table99\n")  # an orphan
    capsys.readouterr()
    assert sweeps.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "table6_tau.yaml: differs from conf/experiment/table6_tau.yaml" in err
    assert "table99.yaml: no experiment of that name" in err
    assert sweeps.main(["--write"]) == 0 and sweeps.main(["--check"]) == 0
    assert not (sweeps_dir / "table99.yaml").exists()


def test_split_values_keeps_brackets_and_quotes():
    assert sweeps.split_values("1e-2,1e-3") == ["1e-2", "1e-3"]
    assert sweeps.split_values("[a,b],'c,d',e") == ["[a,b]", "'c,d'", "e"]


def test_values_yaml_1_1_reads_otherwise_reach_hydra_as_the_experiment_spells_them(sweeps_dir, monkeypatch):
    # W&B reads a sweep file with PyYAML (YAML 1.1) and passes f"{key}={value}": unquoted,
    # null became the string 'None', yes a boolean, 010 the integer 8, 'a,b' a sweep of two
    swept = {"run_name": "null,yes,off,010,0x10,1:30,'a,b',abc", "train.lr": "1e-2,1.0e-3", "head.trainable": "false,true"}
    monkeypatch.setattr(sweeps, "experiment_params", lambda name, compose=None: swept)
    path = sweeps_dir / "odd.yaml"
    path.write_text(sweeps.render("odd"))
    as_set = lambda grid: {frozenset((k, repr(v)) for k, v in parse_point(p).items()) for p in grid}  # noqa: E731
    assert as_set(sweep_grid(path)) == as_set(expand({"experiment": "odd", **swept}))
    assert "values: [1e-2, 1.0e-3]" in path.read_text()  # plain where W&B reads the same value


def test_a_sweep_function_of_an_experiment_is_listed_value_by_value(sweeps_dir, monkeypatch):
    # range(0,3) was written as is: YAML split it at its comma into 'range(0' and '3)', and
    # W&B would pass a sweep to a single run of Hydra, where it is an error
    swept = {"seed": "range(0,3)", "run_name": "choice(a,b)"}
    monkeypatch.setattr(sweeps, "experiment_params", lambda name, compose=None: swept)
    path = sweeps_dir / "ranged.yaml"
    path.write_text(sweeps.render("ranged"))
    as_set = lambda grid: {frozenset((k, repr(v)) for k, v in parse_point(p).items()) for p in grid}  # noqa: E731
    assert len(sweep_grid(path)) == 6
    assert as_set(sweep_grid(path)) == as_set(expand({"experiment": "ranged", **swept}))


def test_an_experiment_that_is_not_valid_yaml_is_an_error_naming_it(sweeps_dir, tmp_path, monkeypatch, capsys):
    # it was a PyYAML traceback naming "<unicode string>", not the file
    from urlkit import grids

    experiments = tmp_path / "experiment"
    experiments.mkdir()
    (experiments / "broken.yaml").write_text("hydra:\n  sweeper:\n    params: {seed: 0,1\n")
    monkeypatch.setattr(grids, "EXPERIMENTS_DIR", experiments)
    with pytest.raises(SystemExit) as exit_:
        sweeps.main(["--check"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {experiments / 'broken.yaml'}: not valid YAML: " in err and "line 4" in err
