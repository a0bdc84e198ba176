"""Data parallel through Lightning's DDP, on this CPU with gloo: one run, exact, many processes.

Every multi-process run is a real ``python -m urlkit.run trainer=ddp trainer.accelerator=cpu``
job (Lightning's own launcher starts the second rank; the two-node test starts one process
per "node" with NODE_RANK on the loopback interface). A run on 2 ranks x 1 query per step
must be the run of one process with 2 queries per step: the same history, the same final
weights and the same test metrics. Runs are shared between assertions (module fixtures)
because each process takes tens of seconds to start on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.reliability_helpers import history, metrics, tiny
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.build import load_data_split
from urlkit.data.groups import TrainGroups
from urlkit.data.stream import GroupStream, RankShard
from urlkit.paths import REPO_ROOT

STEPS = 4
COMMON = [
    f"train.max_steps={STEPS}",
    "train.warmup_steps=1",
    "checkpoint.every_n_steps=2",
    "eval.test_queries=6",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
COMPARED = ("loss", "w_pos_mean", "w_neg_mean", "w_neg_max", "loss_sft_native", "loss_infonce_native",
            "w_cl_neg", "pairwise_accuracy", "lr", "items_consumed", "skipped_steps")  # fmt: skip
TIMEOUT = 280  # seconds a fixture's processes may take together (pytest-timeout is 300 per test)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("ddp") / "data")


def _environment(extra: dict | None = None) -> dict:
    paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **(extra or {})}  # fmt: skip
    for leaked in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT"):
        if leaked not in (extra or {}):
            env.pop(leaked, None)
    return env


def start(data: Path, run_dir: Path, *overrides: str, env: dict | None = None, module: str = "urlkit.run",
          raw: bool = False):  # fmt: skip
    """Start a tiny ``python -m <module>`` job in its own session (so it can be killed whole)."""
    argv = (
        list(overrides)
        if raw
        else [
            *tiny(*overrides),
            f"data.path={data}",
            f"hydra.run.dir={run_dir}",
            *COMMON,
            *overrides,
        ]
    )
    log = (
        run_dir.parent
        / f"{run_dir.name}.{len(list(run_dir.parent.glob(run_dir.name + '.*log')))}.log"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", module, *argv], cwd=run_dir.parent, env=_environment(env),
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    process.log = log
    return process


def wait(*processes, timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    results = []
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        results.append((process.returncode, process.log.read_text()))
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )["state_dict"]


def assert_same_run(mine: Path, reference: Path, weights_too: bool = True) -> None:
    rows, expected = history(mine), history(reference)
    assert [r["step"] for r in rows] == [str(s) for s in range(1, STEPS + 1)]
    assert [r["step"] for r in expected] == [r["step"] for r in rows]
    for row, ref in zip(rows, expected, strict=True):
        for key in COMPARED:
            assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-5, abs=1e-7), (
                row["step"],
                key,
            )
    if weights_too:
        a, b = weights(mine), weights(reference)
        assert a.keys() == b.keys() and a
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


# -- the stream: R ranks x B queries deal exactly the one-process batches of R*B ---------------
def test_rank_shards_together_are_the_one_process_stream_and_resume_at_a_step(data):
    cfg = compose_train(data)
    groups = TrainGroups(load_data_split(cfg.data, "train"), None, 3, seed=0)
    ids = [_id(g) for g in _take(GroupStream(groups, seed=0), 30)]
    for world, block in ((2, 1), (2, 3), (3, 2)):
        shards = [[_id(g) for g in _take(RankShard(GroupStream(groups, seed=0), r, world, block), 30 // world)]
                  for r in range(world)]  # fmt: skip
        # micro-batch k of the one process (world*block queries) = micro-batch k of every rank, in rank order
        rebuilt = [
            q
            for k in range(len(shards[0]) // block)
            for shard in shards
            for q in shard[k * block : (k + 1) * block]
        ]
        assert rebuilt == ids[: len(rebuilt)] and len(rebuilt) >= 24
        resumed = RankShard(GroupStream(groups, seed=0, start=world * block * 2), 1, world, block)
        assert [_id(g) for g in _take(resumed, block)] == shards[1][2 * block : 3 * block]
    with pytest.raises(ValueError, match="resume with the number of ranks"):
        next(iter(RankShard(GroupStream(groups, seed=0, start=3), 0, 2, 1)))


def test_processes_of_one_torchrun_or_slurm_job_compose_the_same_run_directory(monkeypatch, tmp_path):
    from urlkit.config import run_dir

    for variable in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(variable, raising=False)
    assert run_dir("out", "sft-sft") != run_dir("out", "sft-sft")  # one process: a new directory each time
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "b1f6")
    assert run_dir("out", "sft-sft") == run_dir("out", "sft-sft") == "out/runs/torchrun-b1f6_sft-sft"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job (an interactive allocation): the usual name
    assert run_dir("out", "x") != run_dir("out", "x")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert run_dir("out", "x") == "out/runs/slurm-4242.3_x"
    old = tmp_path / "old"  # a training run's folder: resume= names it whatever the launcher
    old.mkdir()
    (old / "config.yaml").write_text("train: {max_steps: 3}\ntrainer: {devices: 1}\n")
    (old / "run.json").write_text("{}")
    assert run_dir("out", "x", resume=str(old)) == str(old)


def _take(stream, n):
    items = []
    for item in stream:
        items.append(item)
        if len(items) == n:
            return items
    return items


def _id(group) -> str:
    return group["query_id"]


# -- 2 ranks x 1 query == 1 process x 2 queries ------------------------------------------------
@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    single = start(data, root / "single", "train.queries_per_step=2")
    ddp = start(data, root / "ddp", *DDP, "train.queries_per_step=1", "logger=csv")
    (code_single, log_single), (code_ddp, log_ddp) = wait(single, ddp)
    assert code_single == 0, log_single[-3000:]
    assert code_ddp == 0, log_ddp[-3000:]
    return root / "single", root / "ddp", log_ddp


def test_the_ddp_command_keeps_one_record_of_the_run_written_by_rank_0(plain):
    _, ddp, log = plain
    rows = history(ddp)
    assert len(rows) == STEPS and [int(r["items_consumed"]) for r in rows] == [
        2 * s for s in range(1, STEPS + 1)
    ]
    info = json.loads((ddp / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == STEPS
    assert "already holds a urlkit run" not in log
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # the second rank was Lightning's, and ran
    assert log.count("[urlkit] run directory:") == log.count("[urlkit] final metrics:") == 1  # rank 0's
    assert log.count("[urlkit] small/test [T2T]:") == 1  # what was built: said by rank 0 alone
    # one record: the rank-0 files, nothing of rank 1 (no Hydra log, no .hydra copy, no checkpoint)
    expected = {".hydra", "checkpoints", "config.yaml", "eval.csv", "history.csv", "lightning", "metrics.json",
                "per_query", "run.json", "run.log"}  # fmt: skip
    assert {p.name for p in ddp.iterdir()} == expected
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["last.ckpt"]
    assert (
        len((ddp / "lightning" / "attempt-1" / "metrics.csv").read_text().splitlines()) > 1
    )  # the csv logger, once
    assert [line.split(",")[0] for line in (ddp / "eval.csv").read_text().splitlines()[1:]] == [
        str(STEPS)
    ] * 2


def test_two_ranks_train_exactly_as_one_process_with_both_ranks_queries(plain):
    single, ddp, _ = plain
    assert_same_run(ddp, single)


def test_sharded_test_evaluation_gives_the_metrics_of_one_process(plain):
    single, ddp, _ = plain
    assert metrics(ddp).keys() == metrics(single).keys()
    for key, value in metrics(single).items():
        assert metrics(ddp)[key] == pytest.approx(value, abs=1e-12), key
    for name in ("small_test_reranker.trec", "small_test_bm25.trec"):
        mine = [line.split()[:3] for line in (ddp / "per_query" / name).read_text().splitlines()]
        theirs = [
            line.split()[:3] for line in (single / "per_query" / name).read_text().splitlines()
        ]
        assert mine == theirs and len(mine) >= 6  # every query, same ranking


def test_two_nodes_of_one_process_train_as_two_devices_of_one_node(data, plain, tmp_path):
    _, ddp, _ = plain
    port = str(free_port())
    nodes = [
        start(data, tmp_path / "nodes", *DDP, "trainer.devices=1", "trainer.num_nodes=2", "train.queries_per_step=1",
              env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node)})
        for node in (0, 1)
    ]  # fmt: skip
    for code, log in wait(*nodes):
        assert code == 0, log[-3000:]
    assert not list((tmp_path / "nodes").glob("*.log"))[1:]  # node 1 wrote no log of its own
    assert_same_run(tmp_path / "nodes", ddp)
    assert metrics(tmp_path / "nodes") == pytest.approx(metrics(ddp), abs=1e-12)


@pytest.mark.parametrize(
    ("settings", "items_per_step"),
    [
        (["train.accumulate=2"], 4),  # 2 micro-batches: 2 backward passes per step and rank
        (["train.chunk_size=2"], 2),  # 2 chunks of (1+3) documents: 2 backward passes
        (["train.accumulate=2", "train.chunk_size=2"], 4),  # both: 4 backward passes
    ],
    ids=["accumulate", "chunks", "accumulate+chunks"],
)
def test_accumulation_and_chunks_all_reduce_once_per_step_and_stay_exact(
    data, tmp_path, settings, items_per_step
):
    """Several backward passes per step on each rank, one gradient all-reduce (the last
    pass; the others run under no_sync), and the history of one process with both ranks'
    queries."""
    single = start(data, tmp_path / "single", "train.queries_per_step=2", *settings)
    ddp = start(data, tmp_path / "ddp", *DDP, "train.queries_per_step=1", *settings,
                module="helpers.instrumented_run", env={"URLKIT_TEST_SYNC_LOG": str(tmp_path / "syncs")})  # fmt: skip
    for code, log in wait(single, ddp):
        assert code == 0, log[-3000:]
    assert_same_run(tmp_path / "ddp", tmp_path / "single")
    assert [int(r["items_consumed"]) for r in history(tmp_path / "ddp")] == [
        items_per_step * s for s in range(1, STEPS + 1)
    ]
    for rank in (0, 1):
        syncs = [line.split() for line in (tmp_path / f"syncs.{rank}").read_text().splitlines()]
        # all-reduces of bucket 0 (every bucket is reduced once per synchronisation), per step
        assert [int(step) for step, bucket in syncs if bucket == "0"] == list(range(STEPS)), syncs


def test_a_ddp_job_sigkilled_mid_run_resumes_to_the_uninterrupted_run(data, plain, tmp_path):
    _, ddp, _ = plain
    run_dir = tmp_path / "killed"
    frozen = tmp_path / "frozen"  # each rank writes frozen.<rank> once it stops after step 2
    job = start(data, run_dir, *DDP, "train.queries_per_step=1", "logger=csv",
                module="helpers.instrumented_run", env={"URLKIT_TEST_FREEZE": f"2:{frozen}"})  # fmt: skip
    deadline = time.monotonic() + TIMEOUT / 2
    while time.monotonic() < deadline and job.poll() is None:
        if all(Path(f"{frozen}.{rank}").exists() for rank in (0, 1)):
            break  # both ranks are past step 2 (its checkpoint written) and before step 3
        time.sleep(0.05)
    assert all(Path(f"{frozen}.{rank}").exists() for rank in (0, 1)), job.log.read_text()[-3000:]
    os.killpg(job.pid, signal.SIGKILL)  # the whole job: Lightning's launcher and its second rank
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.log.read_text()[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / "metrics.json").exists()

    ((code, log),) = wait(start(data, run_dir, f"resume={run_dir}", raw=True))
    assert code == 0, log[-3000:]
    assert "from step 2" in log
    assert_same_run(run_dir, ddp)
    assert metrics(run_dir) == pytest.approx(metrics(ddp), abs=1e-12)


# -- one rank's NaN: every rank skips, or the whole job stops, naming the step and the query --
def _query_on_rank(data, step: int, rank: int):
    """The query rank ``rank`` of 2 trains on at ``step`` (1 query per rank per step)."""
    cfg = compose_train(data)
    split = load_data_split(cfg.data, "train")
    order = GroupStream(TrainGroups(split, None, 3), seed=cfg.seed).permutation(0)
    return split.queries[order[(step - 1) * 2 + rank]]


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_nan_on_one_rank_is_decided_by_every_rank(data, tmp_path, policy):
    target = _query_on_rank(data, step=2, rank=1)
    began = time.monotonic()
    job = start(data, tmp_path / "run", *DDP, "train.queries_per_step=1", f"train.nonfinite={policy}",
                module="helpers.instrumented_run", env={"URLKIT_TEST_POISON": target.text})  # fmt: skip
    ((code, log),) = wait(job)
    rows = history(tmp_path / "run")
    if policy == "skip":
        assert code == 0, log[-3000:]
        assert [r["step"] for r in rows] == [str(s) for s in range(1, STEPS + 1)]
        assert [r["skipped_steps"] for r in rows] == ["0", "1", "1", "1"]
        assert [r["items_consumed"] for r in rows] == [
            "2",
            "6",
            "8",
            "10",
        ]  # the skipped step's groups were consumed
        assert f"queries: {target.id}" in log
    else:
        assert code != 0 and time.monotonic() - began < TIMEOUT / 2, log[-3000:]
        assert f"at optimizer step 2; queries: {target.id}." in log, log[-3000:]
        assert [r["step"] for r in rows] == ["1"]
        info = json.loads((tmp_path / "run" / "run.json").read_text())
        assert (
            info["status"] == "failed" and target.id in info["error"] and "step 2" in info["error"]
        )
