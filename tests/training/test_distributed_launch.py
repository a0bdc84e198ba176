"""Launches of several processes that urlkit refuses, on every rank and before any collective,
so that no process is left waiting for a rank that has gone: a Hydra multirun of a DDP job,
and a SLURM job started again in the folder its job id names (a requeue)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers.reliability_helpers import tiny
from helpers.run_helpers import write_small_dataset

from urlkit.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
REFUSED_WITHIN_S = 150  # imports and config on a loaded 2-core machine; a hang is killed here


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("launch") / "data")


def _environment(extra: dict | None = None) -> dict:
    paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **(extra or {})}  # fmt: skip
    for leaked in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        if leaked not in (extra or {}):
            env.pop(leaked, None)
    return env


def test_a_multirun_of_a_ddp_job_is_refused_before_any_work(data, tmp_path):
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "urlkit.run", "-m", *tiny(), f"data.path={data}", f"output_root={tmp_path}",
         *DDP, "seed=0,1"],
        cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=REFUSED_WITHIN_S,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "error: -m (a Hydra multirun) cannot run a job of 2 processes" in output
    assert "SLURM job array" in output
    assert "Initializing distributed" not in output and not list(tmp_path.rglob("run.json"))
    assert time.monotonic() - began < REFUSED_WITHIN_S
