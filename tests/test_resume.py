"""A run killed with SIGKILL after a checkpoint resumes with a continuous, identical history."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from run_helpers import write_small_dataset
from urlkit.paths import REPO_ROOT

STEPS = 30


def _command(data, run_dir, *extra):
    return [
        sys.executable, "-m", "urlkit.run", "model=tiny", f"data.path={data}", "logger=none",
        f"train.max_steps={STEPS}", "train.warmup_steps=2", "checkpoint.every_n_steps=5",
        "eval.every_n_steps=0", "data.n_negatives=3", "+trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


def _history(run_dir):
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def _checkpoint_step(path):
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being written right now
        return -1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("resume") / "data")


def test_sigkill_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_command(data, straight), check=True, env=env, cwd=REPO_ROOT, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(data, killed), env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and 0 < _checkpoint_step(ckpt) < STEPS:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged_before = len(_history(killed))
    assert 0 < logged_before < STEPS
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "urlkit.run", f"resume={killed}"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    history, reference = _history(killed), _history(straight)
    assert [int(r["step"]) for r in history] == list(range(1, STEPS + 1))  # no gap, no duplicate
    for mine, theirs in zip(history, reference, strict=True):
        for key in ("loss", "w_pos_mean", "w_neg_mean", "items_consumed", "lr"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-4, abs=1e-6), (mine["step"], key)
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (killed, straight))
    assert final == pytest.approx(expected, abs=1e-6)
