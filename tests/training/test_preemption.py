"""Pre-emption notices under DDP: agreed in the step's one reduce, acted on at a step boundary.

The multi-process runs of test_distributed.py take minutes on a loaded 2-core machine; these
run one in-process training of the tiny model in which this process is rank 0 of two
identical ranks (:func:`_two_identical_ranks`): the code takes its multi-rank paths, every
all-reduce is counted, and the "other rank" contributes exactly what this one does.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import lightning as L
import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.errors import EXIT_INTERRUPTED
from urlkit.train import train
from urlkit.training import distributed
from urlkit.training.module import RerankerModule
from urlkit.training.preemption import PreemptionCheckpoint

pytestmark = pytest.mark.timeout(120)

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("preemption") / "data")


def _two_identical_ranks(monkeypatch) -> dict:
    """While the training step or PreemptionCheckpoint's end-of-batch hook runs, this process
    is rank 0 of 2 (urlkit.training.distributed and trainer.world_size say so) whose other rank
    holds the same numbers: an all-reduce doubles sums and keeps extremes, a gather returns two
    copies. Returns the counts: ``collectives`` (all-reduces and tensor all-gathers), ``reads`` (host syncs made by
    urlkit/training code), each also ``_in_callback``, and ``steps`` (optimizer steps)."""
    counted = {"collectives": 0, "reads": 0, "collectives_in_callback": 0, "reads_in_callback": 0, "steps": 0}
    where = []  # "step" or "callback" while one of them runs

    def all_reduce(tensor, op=torch.distributed.ReduceOp.SUM, **kwargs):
        counted["collectives"] += 1
        counted["collectives_in_callback"] += where[-1:] == ["callback"]
        if op == torch.distributed.ReduceOp.SUM:
            tensor.mul_(2)

    def all_gather(rows, tensor, **kwargs):
        counted["collectives"] += 1
        counted["collectives_in_callback"] += where[-1:] == ["callback"]
        for row in rows:
            row.copy_(tensor)

    def all_gather_object(gathered, obj, **kwargs):
        gathered[:] = [obj] * len(gathered)

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    world_size = distributed.world_size
    monkeypatch.setattr(distributed, "world_size", lambda: 2 if where else world_size())
    trainer_world_size = L.Trainer.world_size
    monkeypatch.setattr(L.Trainer, "world_size", property(lambda self: 2 if where else trainer_world_size.fget(self)))

    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if where and "/urlkit/training/" in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                counted["reads"] += 1
                counted["reads_in_callback"] += where[-1] == "callback"
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    def inside(method, label):
        def wrapped(*args, **kwargs):
            where.append(label)
            try:
                return method(*args, **kwargs)
            finally:
                where.pop()

        return wrapped

    optimizer_step = RerankerModule._optimizer_step

    def counted_optimizer_step(self):
        counted["steps"] += 1
        return optimizer_step(self)

    monkeypatch.setattr(RerankerModule, "_optimizer_step", counted_optimizer_step)
    monkeypatch.setattr(RerankerModule, "training_step", inside(RerankerModule.training_step, "step"))
    monkeypatch.setattr(PreemptionCheckpoint, "on_train_batch_end",
                        inside(PreemptionCheckpoint.on_train_batch_end, "callback"))  # fmt: skip
    return counted


def test_a_ddp_step_agrees_the_preemption_notices_in_its_one_reduce(data, tmp_path, monkeypatch):
    """Per optimizer step of several ranks: the telemetry's one all-gather (sums, and maxima
    with the guard's flags and the pre-emption notices) and the updated parameters' check, with
    one host read each (``tolist``, ``item``); the pre-emption callback adds neither. It added
    one all-reduce and one ``tolist`` per step (b3da7df); the telemetry took two all-reduces
    (a sum and a max) before its all-gather."""
    counted = _two_identical_ranks(monkeypatch)
    train(compose_train(data, "train.accumulate=2", "eval.test_queries=2"), tmp_path / "run")
    assert counted["steps"] == 3
    assert (counted["collectives_in_callback"], counted["reads_in_callback"]) == (0, 0)
    assert counted["collectives"] == 2 * counted["steps"]
    assert counted["reads"] == 2 * counted["steps"]


def _checkpoint_step(run_dir) -> int | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"]) if path.exists() else None


def _history_steps(run_dir) -> list[str]:
    return [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]


def _sigterm_when(monkeypatch, method: str, when) -> None:
    """SIGTERM to this process right after ``RerankerModule.<method>`` returns where ``when(module)``."""
    original = getattr(RerankerModule, method)

    def then_signalled(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if when(self):
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(RerankerModule, method, then_signalled)


def test_a_sigterm_after_the_steps_reduce_stops_every_rank_at_the_next_step_with_its_checkpoint(
    data, tmp_path, monkeypatch
):
    """Under DDP a notice that comes after the step's reduce (here: while step 2 is logged) is
    agreed with step 3's and acted on at its end: step 3 checkpointed, then the stop. Lightning
    must not act on it first: it would stop this rank alone after step 2, unsaved (no periodic
    checkpoint here), while the other ranks wait in step 3's collectives."""
    counted = _two_identical_ranks(monkeypatch)
    _sigterm_when(monkeypatch, "_log_step", lambda module: module.global_step == 2)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(data, "train.max_steps=5", "checkpoint.every_n_steps=100"), run_dir)
    assert stopped.value.code == EXIT_INTERRUPTED
    assert counted["steps"] == 3 and _history_steps(run_dir) == ["1", "2", "3"]
    assert _checkpoint_step(run_dir) == 3
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_a_sigterm_between_micro_batches_checkpoints_the_step_when_it_ends(data, tmp_path, monkeypatch):
    """One process, two micro-batches a step, SIGTERM after the first of step 2: the step ends,
    is checkpointed, then the run stops. Lightning's own handling stopped after that
    micro-batch, with the step unsaved (no periodic checkpoint here: nothing to resume from)."""
    _sigterm_when(monkeypatch, "training_step", lambda module: module.global_step == 1 and len(module.step_stats) == 1)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(data, "train.accumulate=2", "train.max_steps=4", "checkpoint.every_n_steps=100"), run_dir)
    assert stopped.value.code == EXIT_INTERRUPTED
    assert _history_steps(run_dir) == ["1", "2"]
    assert _checkpoint_step(run_dir) == 2


@pytest.mark.parametrize("ending", ["error", "requeue"])
def test_a_fit_that_ends_in_an_exception_leaves_the_signal_handlers_it_found(data, tmp_path, monkeypatch, ending):
    """In a SLURM job the callback sets its requeue (SIGUSR1) handler at setup. When fit ends in
    an exception (a crash, or the callback's own stop after SIGUSR1) Lightning calls no
    teardown, and its own restore put that handler back: it stayed in place after the run, in
    the interpreter of a notebook or of a study running many runs. Now the SIGTERM and SIGUSR1
    handlers found before the run are the ones after it."""
    from urlkit.training import preemption

    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # a SLURM job, not an srun step Lightning would detect
    for variable in ("SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(preemption, "requeue_job", lambda: None)  # no scontrol here
    original = RerankerModule.training_step

    def second_step_ends(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.global_step == 2:
            if ending == "error":
                raise RuntimeError("a crash mid-run")
            os.kill(os.getpid(), signal.SIGUSR1)  # acted on when the step ends: checkpoint, stop
        return result

    monkeypatch.setattr(RerankerModule, "training_step", second_step_ends)
    notebooks = {signum: (lambda signum, frame: None) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    before = {signum: signal.signal(signum, handler) for signum, handler in notebooks.items()}
    try:
        with pytest.raises(RuntimeError if ending == "error" else SystemExit):
            train(compose_train(data, "train.max_steps=4", "checkpoint.every_n_steps=100"), tmp_path / "run")
        assert {signum: signal.getsignal(signum) for signum in notebooks} == notebooks
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    if ending == "requeue":
        assert _checkpoint_step(tmp_path / "run") == 2
