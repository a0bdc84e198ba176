"""``resume=<run dir>`` continues a run with the config it started with: an override that would
change it is an error naming it (it used to be dropped without a word), one that repeats the
saved value (a requeued job's command line) is fine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.run_helpers import write_small_dataset

from urlkit.paths import REPO_ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "urlkit.run", *args], capture_output=True, text=True,
                          timeout=280, cwd=REPO_ROOT)  # fmt: skip


def test_resume_refuses_overrides_that_would_change_the_run_and_accepts_repeats(tmp_path):
    data = write_small_dataset(tmp_path / "small")
    run = tmp_path / "run"
    command = ["model=tiny", f"data.path={data}", "logger=none", "train.max_steps=2", "train.warmup_steps=1",
               "eval.every_n_steps=0", "data.n_negatives=3", "+trainer.enable_progress_bar=false"]  # fmt: skip
    first = _run(*command, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    info.update(status="interrupted", error="SIGTERMException")  # as a pre-empted attempt leaves it
    (run / "run.json").write_text(json.dumps(info))
    changed = _run(*command, f"resume={run}", "train.max_steps=30", "seed=7")
    assert changed.returncode == 2
    assert "train.max_steps=30 (the run has train.max_steps=2); seed=7 (the run has seed=0)" in changed.stderr
    again = _run(*command, f"resume={run}")  # the same command line, requeued
    assert again.returncode == 0, again.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info.get("error") is None  # not the earlier attempt's


def test_a_resumed_run_keeps_the_expanded_token_set_its_checkpoint_trained(tmp_path):
    # head.num_tokens > 2: the extra tokens are ranked on the training data when a run starts; a
    # resume used to rank them again, so queries appended since (here, which rank others) gave the
    # checkpoint's trained head rows to other tokens. It now takes the set run.json records
    data = write_small_dataset(tmp_path / "small")
    run = tmp_path / "run"
    command = ["model=tiny", f"data.path={data}", "logger=none", "train.max_steps=2", "train.warmup_steps=1",
               "eval.every_n_steps=0", "data.n_negatives=3", "+trainer.enable_progress_bar=false",
               "head.num_tokens=6", "head.token_sample=32", "train.lr=5e-3", "checkpoint.every_n_steps=1"]  # fmt: skip
    first = _run(*command, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    trained = info["token_ids"]
    assert len(trained) == 6
    info.update(status="interrupted", error="SIGTERMException")
    (run / "run.json").write_text(json.dumps(info))
    with (data / "train.jsonl").open("a") as f:
        for i in range(12):
            f.write(json.dumps({"id": f"new{i}", "text": f"completely different question number {i} about zebras",
                                "positives": ["d-cats"]}) + "\n")
    again = _run(*command, f"resume={run}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["token_ids"] == trained


def test_a_folder_whose_run_json_is_cut_short_is_refused_as_a_run_not_a_json_traceback(tmp_path):
    from helpers.run_helpers import compose_train

    from urlkit.errors import ConfigError
    from urlkit.run import train

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "run.json").write_text('{"status": "runn')  # a copy cut short
    with pytest.raises(ConfigError, match="already holds a urlkit run"):
        train(compose_train(write_small_dataset(tmp_path / "small")), run)


def test_a_resume_reads_the_runs_config_once_after_hydra_resolves_the_run_directory(tmp_path, monkeypatch):
    # it read config.yaml three times: where Hydra resolves hydra.run.dir (the check that the
    # folder is a run), again in run_directory (the same check) and a third time, unchecked, in
    # resume_config; the app now reads it once, checked, and passes it down
    import sys

    from helpers.run_helpers import compose_train
    from omegaconf import OmegaConf

    import urlkit.run

    run = tmp_path / "run"
    run.mkdir()
    saved = compose_train(write_small_dataset(tmp_path / "small"))
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(saved, resolve=True)))
    (run / "run.json").write_text("{}")
    reads, load = [], OmegaConf.load
    monkeypatch.setattr(OmegaConf, "load", lambda f, *a, **k: (reads.append(str(f)), load(f, *a, **k))[1])
    continued = []
    monkeypatch.setattr(urlkit.run, "train", lambda cfg, run_dir, command=None: continued.append(cfg) or {})
    monkeypatch.setattr(sys, "argv", ["urlkit.run", f"resume={run}"])
    urlkit.run.main()
    assert continued[0].resume == str(run) and continued[0].train == saved.train  # the run's own config
    assert reads.count(str(run / "config.yaml")) == 2  # Hydra's run directory check, then the app's one read


def _interrupted(run, **fields):
    """Mark ``run`` as a pre-empted attempt leaves it, with ``fields`` set in run.json."""
    info = json.loads((run / "run.json").read_text())
    info.update(status="interrupted", error="SIGTERMException", **fields)
    (run / "run.json").write_text(json.dumps(info))


@pytest.mark.timeout(300)
def test_a_resume_continues_in_the_dtype_the_run_trained_in_unless_model_dtype_is_given(tmp_path, monkeypatch,
                                                                                      capsys):
    """model.dtype=auto resolves per machine: a run that trained in bfloat16 on a machine with bf16
    units and resumed on one without continued in float32 (and rewrote run.json's model_dtype).
    It now continues in the recorded dtype; model.dtype=... given to the resume is taken, said so."""
    from helpers.run_helpers import compose_train
    from omegaconf import OmegaConf

    import urlkit.hardware
    from urlkit.config import check_resume_target
    from urlkit.run import resume_config, train

    for units in ("cpu_has_bf16_units", "cuda_has_bf16_units"):
        monkeypatch.setattr(urlkit.hardware, units, lambda *args: False)  # this machine: auto is float32
    data = write_small_dataset(tmp_path / "small")
    run = tmp_path / "run"
    train(compose_train(data, "model.dtype=auto"), run)
    _interrupted(run, model_dtype="bfloat16")  # as a machine with bf16 units left it
    capsys.readouterr()
    train(resume_config(run, check_resume_target(run)), run)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["model_dtype"] == "bfloat16"
    assert "continuing in bfloat16, the dtype the run trained in so far" in capsys.readouterr().out
    assert OmegaConf.load(run / "config.yaml").model.dtype == "auto"  # what the user wrote

    _interrupted(run)
    asked = resume_config(run, check_resume_target(run), compose_train(data, "model.dtype=float32"),
                          ["model.dtype=float32"])  # fmt: skip
    train(asked, run)
    assert json.loads((run / "run.json").read_text())["model_dtype"] == "float32"
    assert "model.dtype=float32: continuing in float32, as asked, though the run trained in bfloat16" in (
        capsys.readouterr().out)
    assert OmegaConf.load(run / "config.yaml").model.dtype == "float32"
