"""A SLURM job that is pre-empted and requeued (same ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT``
>= 1, the same command line) continues its own run: the folder urlkit named at its first start,
from the newest checkpoint, with the same W&B run id, each step once in history.csv.

SLURM itself is simulated with its environment variables (no SLURM here); the runs are real
``python -m urlkit.run`` processes of the tiny model (reliability_zygote.py).
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers.reliability_helpers import Launcher, history, tiny
from helpers.run_helpers import write_small_dataset

from urlkit.errors import EXIT_INTERRUPTED, ConfigError

pytestmark = pytest.mark.timeout(300)

# a one-task batch job (what Lightning's SLURMEnvironment reads, so that its detection runs too)
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
         "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "urlkit",
         "SLURM_NODELIST": "127.0.0.1"}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("requeue") / "data")


def _runs(root):
    return sorted(p.parent for p in (root / "runs").glob("*/run.json"))


def test_a_requeued_slurm_job_continues_its_run_in_the_same_folder_from_its_checkpoint(data, tmp_path):
    command = [*tiny(), f"data.path={data}", f"output_root={tmp_path}", "train.max_steps=5",
               "checkpoint.every_n_steps=2"]  # fmt: skip
    launcher = Launcher.shared()
    first = launcher.run(command, die="step:3", env={**SLURM, "SLURM_RESTART_COUNT": None})  # pre-empted: SIGKILL
    assert first.returncode == -signal.SIGKILL, first.output[-3000:]
    [run_dir] = _runs(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())

    again = launcher.run(command, env={**SLURM, "SLURM_RESTART_COUNT": "1"})  # the batch script, run again
    assert again.returncode == 0, again.output[-3000:]
    assert "SLURM job 4242 was requeued" in again.output and "from step 2" in again.output
    assert _runs(tmp_path) == [run_dir]  # no second folder
    assert [row["step"] for row in history(run_dir)] == ["1", "2", "3", "4", "5"]  # step 3 not twice
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "finished" and resumed["wandb_id"] == info["wandb_id"]
    assert resumed["slurm"] == {"job_id": "4242", "overrides": command}  # the key the next requeue finds it by

    # requeued once more after it finished (a later command of the job script was cut short)
    done = launcher.run(command, env={**SLURM, "SLURM_RESTART_COUNT": "2"})
    assert done.returncode == 0 and "finished before the requeue: nothing to do" in done.output, done.output[-3000:]
    assert [row["step"] for row in history(run_dir)] == ["1", "2", "3", "4", "5"]


def _checkpoint_step(run_dir) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.parametrize("notice", ["term", "usr1"])
def test_a_preemption_notice_checkpoints_the_step_then_the_requeued_job_goes_on_from_it(data, tmp_path, notice):
    # term: SIGTERM, what SLURM sends a pre-empted (or scancel'ed, or requeued) job before SIGKILL;
    # usr1: SIGUSR1, what #SBATCH --signal=USR1@<s> sends before the time limit: urlkit requeues the job
    scontrol = tmp_path / "bin" / "scontrol"  # SLURM's, faked: records what it was asked
    scontrol.parent.mkdir()
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    scontrol.chmod(0o755)
    path = f"{scontrol.parent}:{os.environ['PATH']}"
    command = [*tiny(), f"data.path={data}", f"output_root={tmp_path}", "train.max_steps=5",
               "checkpoint.every_n_steps=2"]  # fmt: skip
    launcher = Launcher.shared()
    first = launcher.run(command, die=f"{notice}:3", env={**SLURM, "SLURM_RESTART_COUNT": None, "PATH": path})
    assert first.returncode == EXIT_INTERRUPTED, first.output[-3000:]  # stopped, not trained to the end
    [run_dir] = _runs(tmp_path)
    assert _checkpoint_step(run_dir) == 3  # the step the notice came after, not the periodic step 2
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # Lightning's mid-step save is off
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    requeued = (tmp_path / "scontrol.log").read_text().split() if (tmp_path / "scontrol.log").exists() else []
    assert requeued == (["requeue", "4242"] if notice == "usr1" else [])

    again = launcher.run(command, env={**SLURM, "SLURM_RESTART_COUNT": "1", "PATH": path})
    assert again.returncode == 0, again.output[-3000:]
    assert "from step 3" in again.output
    assert [row["step"] for row in history(run_dir)] == ["1", "2", "3", "4", "5"]


def test_a_requeued_job_finds_the_run_of_its_own_command_among_the_runs_of_the_output_root(tmp_path, monkeypatch):
    from urlkit.config import run_dir

    def run(name, job, overrides):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"slurm": {"job_id": job, "overrides": overrides}}))
        return folder

    seed0 = run("a", "4242", ["seed=0"])  # one job script training two runs, one after the other
    seed1 = run("b", "4242", ["seed=1"])
    run("c", "999", ["seed=1"])  # another job's
    for variable in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # its first start: new folders
    assert run_dir(str(tmp_path), "x", overrides=["seed=1"]) not in (str(seed0), str(seed1))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert run_dir(str(tmp_path), "x", overrides=["seed=1"]) == str(seed1)
    assert run_dir(str(tmp_path), "x", overrides=["seed=0"]) == str(seed0)
    assert run_dir(str(tmp_path), "x", overrides=["seed=2"]).startswith(f"{tmp_path}/runs/")  # none yet: new
    assert run_dir(str(tmp_path), "x", overrides=["seed=2"]) not in (str(seed0), str(seed1))
    run("d", "4242", ["seed=0"])
    from urlkit.slurm import requeued_run

    with pytest.raises(ConfigError, match="started this command more than once"):
        requeued_run(tmp_path, ["seed=0"])
