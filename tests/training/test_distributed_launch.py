"""Launches of several processes that urlkit refuses, on every rank and before any collective,
so that no process is left waiting for a rank that has gone: a Hydra multirun of a DDP job,
and a SLURM job started again in the folder its job id names (a requeue); and a job whose rank
1 alone stops at load (a corrupt picture in its share), which does not leave rank 0 waiting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers.data_builders import write_image
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


def test_a_requeued_slurm_job_is_refused_on_every_rank_with_the_resume_to_use(data, tmp_path):
    # the first start of SLURM job 4242 left its run in the folder the job id names; the
    # requeued job (same job id, SLURM_RESTART_COUNT=1) starts its 2 tasks again there
    run_dir = tmp_path / "runs" / "slurm-4242.0_sft-sft"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "run.json").write_text('{"status": "running", "launch": "slurm-4242.0.restart-0"}')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
             "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1", "SLURM_JOB_NAME": "urlkit",
             "SLURM_RESTART_COUNT": "1", "MASTER_PORT": str(free_port())}  # fmt: skip
    argv = [sys.executable, "-m", "urlkit.run", *tiny(), f"data.path={data}", f"output_root={tmp_path}", *DDP,
            "train.queries_per_step=1"]  # fmt: skip
    began = time.monotonic()
    tasks = [
        subprocess.Popen(argv, cwd=tmp_path, env=_environment({**slurm, "SLURM_PROCID": str(task),
                         "SLURM_LOCALID": str(task)}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for task in (0, 1)
    ]  # fmt: skip
    outputs = []
    for task in tasks:
        try:
            outputs.append(task.communicate(timeout=max(1.0, REFUSED_WITHIN_S - (time.monotonic() - began)))[0])
        except subprocess.TimeoutExpired:
            for process in tasks:
                process.kill()
            pytest.fail("a task still ran after the other had refused the folder (it waits for its rank 0)")
    for task, output in zip(tasks, outputs, strict=True):
        assert task.returncode == 2, output[-3000:]
        assert f"the job id slurm-4242.0 names (a requeued or restarted job keeps its id): continue it by " \
               f"starting the job with resume={run_dir}" in output, output[-3000:]  # fmt: skip
        assert "Initializing distributed" not in output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in before} == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_a_corrupt_picture_in_rank_1s_share_stops_the_job_without_rank_0_waiting(data, tmp_path):
    """Each rank verifies its share of the pictures (urlkit.data.picture_checks.PictureShare).
    Lightning's launcher starts rank 1 when rank 0, its load passed, enters fit and waits for it
    to connect; rank 1 stops at its corrupt picture, and the launcher ends rank 0 within seconds
    instead of torch's 30 minutes of waiting for a rank that has gone."""
    from urlkit.data.picture_checks import PictureShare

    pictures = data.parent / "pictures"
    pictures.mkdir()
    for name in ("corpus.jsonl", "train.jsonl", "test.jsonl", "dataset.json"):
        (pictures / name).write_bytes((data / name).read_bytes())
    documents = [json.loads(line) for line in (pictures / "corpus.jsonl").read_text().splitlines()]
    corrupt = next(d["id"] for d in documents if PictureShare(1, 2).verifies(f"images/{d['id']}.png"))
    for document in documents:
        document["image"] = f"images/{document['id']}.png"
        picture = bytearray(write_image(pictures / document["image"]).read_bytes())
        if document["id"] == corrupt:  # its header opens, its checksum fails
            picture[picture.index(b"IDAT") + 6] ^= 0xFF
            (pictures / document["image"]).write_bytes(bytes(picture))
    (pictures / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    began = time.monotonic()
    job = subprocess.Popen(
        [sys.executable, "-m", "urlkit.run", *tiny(), f"data.path={pictures}", f"hydra.run.dir={tmp_path / 'run'}",
         *DDP, "train.queries_per_step=1", "train.max_steps=2"],
        cwd=tmp_path, env=_environment({"MASTER_PORT": str(free_port())}), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output = job.communicate(timeout=REFUSED_WITHIN_S + 90)[0]
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, 9)
        pytest.fail(f"rank 0 still waited for rank 1: {job.communicate()[0][-3000:]}")
    assert job.returncode != 0, output[-3000:]
    # rank 0 passed its load (the picture is not its to open) and waited in fit for rank 1
    assert "Initializing distributed: GLOBAL_RANK: 0" in output, output[-3000:]
    assert f"unreadable image images/{corrupt}.png" in output, output[-3000:]
    assert time.monotonic() - began < REFUSED_WITHIN_S + 90
