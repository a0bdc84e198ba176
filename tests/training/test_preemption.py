"""Pre-emption notices: acted on at a step boundary, never between the micro-batches of a step."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.errors import EXIT_INTERRUPTED
from urlkit.train import train
from urlkit.training.module import RerankerModule

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("preemption") / "data")


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
