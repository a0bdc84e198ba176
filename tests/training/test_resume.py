"""A run SIGKILLed at every kind of point, then resumed, ends exactly as an uninterrupted run.

One run (LoRA dropout 0.1, so the RNG state matters) is killed three times, each time by
SIGKILL sent from inside a real ``python -m urlkit.run`` process at a chosen point (see
reliability_zygote.py), and resumed with ``resume=<run dir>`` after each kill:

1. after step 2, before the first checkpoint (step 3): the resume starts over in the same
   directory and the two history rows of the dead attempt are dropped;
2. halfway through writing the checkpoint of step 6: ``last.ckpt`` is still the complete
   checkpoint of step 3 (the save is atomic) and the resume replays steps 4-6;
3. during the final test evaluation, after the reranker's results were written: the
   checkpoint of the last step (10, not a multiple of 3) exists and the evaluation is redone.

The history, the evaluation rows and the final metrics must equal those of a run that was
never interrupted (same seed), to floating-point tolerance.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch
from helpers.reliability_helpers import Launcher, evaluations, history, metrics, train_args
from helpers.run_helpers import write_small_dataset

from urlkit.errors import EXIT_INTERRUPTED

STEPS, EVERY = 10, 3
SETTINGS = [f"train.max_steps={STEPS}", f"checkpoint.every_n_steps={EVERY}", "model.lora.dropout=0.1"]
COMPARED = ("loss", "w_pos_mean", "w_neg_mean", "loss_sft_native", "items_consumed", "lr", "skipped_steps")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("resume") / "data")


def _killed(result) -> bool:
    return result.returncode == -signal.SIGKILL


def _checkpoint_step(run_dir) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"])


def test_a_run_killed_at_every_kind_of_point_resumes_to_the_uninterrupted_result(data, tmp_path):
    launcher = Launcher.shared()
    killed = tmp_path / "killed"

    # 1. killed after step 2, before any checkpoint
    result = launcher.run(train_args(data, killed, *SETTINGS), die="step:2")
    assert _killed(result), result.output[-3000:]
    assert [row["step"] for row in history(killed)] == ["1", "2"]  # flushed as it went
    assert not (killed / "checkpoints" / "last.ckpt").exists()
    wandb_id = json.loads((killed / "run.json").read_text())["wandb_id"]  # every attempt logs to it

    # 2. resumed from scratch, killed while writing the checkpoint of step 6
    result = launcher.run([f"resume={killed}"], die="save:6")
    assert _killed(result), result.output[-3000:]
    assert "from scratch" in result.output
    assert [row["step"] for row in history(killed)] == [str(s) for s in range(1, 7)]  # no duplicate 1, 2
    assert list((killed / "checkpoints").glob(".last.ckpt.*.tmp")), "the kill did not land mid-save"
    assert _checkpoint_step(killed) == 3  # the previous checkpoint, complete

    # 3. resumed from step 3, killed during the final evaluation
    result = launcher.run([f"resume={killed}"], die="final-eval")
    assert _killed(result), result.output[-3000:]
    assert "from step 3" in result.output
    assert not list((killed / "checkpoints").glob(".*.tmp"))  # the next save cleared the torn file
    assert _checkpoint_step(killed) == STEPS  # the last step is checkpointed, off the 3-step grid
    assert not (killed / "metrics.json").exists()
    assert [row["split"] for row in evaluations(killed)] == ["test:reranker"]

    # 4. resumed at the end of training: only the evaluation is redone
    result = launcher.run([f"resume={killed}"])
    assert result.returncode == 0, result.output[-3000:]
    info = json.loads((killed / "run.json").read_text())
    assert info["status"] == "finished" and info["wandb_id"] == wandb_id

    # the reference runs in the same kind of process as the killed one: the pytest process
    # may run a different number of threads (a tiny VL test sets it), and a different
    # summation order drifts ~1e-4 in 10 steps
    straight = tmp_path / "straight"
    result = launcher.run(train_args(data, straight, *SETTINGS))
    assert result.returncode == 0, result.output[-3000:]
    assert metrics(killed) == pytest.approx(metrics(straight), abs=1e-6)
    mine, theirs = history(killed), history(straight)
    assert [row["step"] for row in mine] == [str(s) for s in range(1, STEPS + 1)]
    for row, reference in zip(mine, theirs, strict=True):
        for key in COMPARED:
            assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-4, abs=1e-6), (row["step"], key)
    assert [(r["step"], r["split"]) for r in evaluations(killed)] == [(r["step"], r["split"]) for r in evaluations(straight)]


def test_a_sigterm_stops_the_run_as_interrupted_with_a_failing_status_and_resume_finishes_it(data, tmp_path):
    run_dir = tmp_path / "run"
    result = Launcher.shared().run(train_args(data, run_dir, "train.max_steps=4", "checkpoint.every_n_steps=2"), die="term:3")
    assert result.returncode == EXIT_INTERRUPTED, result.output[-3000:]  # not 0: a sweep agent must not see success
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"]
    result = Launcher.shared().run([f"resume={run_dir}"])
    assert result.returncode == 0, result.output[-3000:]
    assert [row["step"] for row in history(run_dir)] == ["1", "2", "3", "4"]
