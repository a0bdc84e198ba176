"""What a resumed run keeps of its earlier attempts: one dev row per evaluated step, the
loggers' own files, and run.json's status when the run is stopped outside training.

One run with ``train.accumulate=2`` (two micro-batches per optimizer step) and ``logger=csv``
is SIGKILLed after step 3 (its step-2 dev evaluation and checkpoint written) and resumed; the
tests read what the two attempts left together.
"""

from __future__ import annotations

import csv
import json
import signal

import pytest
from helpers.reliability_helpers import Launcher, evaluations, train_args
from helpers.run_helpers import write_small_dataset

from urlkit.errors import EXIT_CTRL_C, EXIT_INTERRUPTED

pytestmark = pytest.mark.timeout(300)

STEPS, EVERY = 4, 2
ACCUMULATED = [f"train.max_steps={STEPS}", f"checkpoint.every_n_steps={EVERY}", f"eval.every_n_steps={EVERY}",
               "train.accumulate=2", "train.warmup_steps=1", "eval.dev_queries=2", "logger=csv"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("records") / "data")


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory):
    """The run killed after step 3 and resumed from its step-2 checkpoint."""
    run_dir = tmp_path_factory.mktemp("accumulated") / "run"
    launcher = Launcher.shared()
    killed = launcher.run(train_args(data, run_dir, *ACCUMULATED), die="step:3")
    assert killed.returncode == -signal.SIGKILL, killed.output[-3000:]
    finished = launcher.run([f"resume={run_dir}"])
    assert finished.returncode == 0, finished.output[-3000:]
    assert "from step 2" in finished.output
    return run_dir


def test_dev_evaluations_run_once_per_evaluated_optimizer_step_also_across_a_resume(resumed):
    # not at "step 0" after the first micro-batch, nor again at the step the resume starts from
    dev = [int(row["step"]) for row in evaluations(resumed) if row["split"] == "dev"]
    assert dev == [2, 4]


def test_every_attempt_keeps_its_own_csv_logger_file(resumed):
    # Lightning's CSVLogger deletes a metrics.csv it finds in its folder: one folder per attempt,
    # each written as it goes (the killed attempt's rows are on disk)
    attempts = sorted(p.name for p in (resumed / "lightning").iterdir())
    assert attempts == ["attempt-1", "attempt-2"]
    steps = []
    for attempt in attempts:
        rows = list(csv.DictReader((resumed / "lightning" / attempt / "metrics.csv").open()))
        steps.append(sorted({int(row["step"]) for row in rows if row.get("train/loss")}))
    assert steps == [[1, 2, 3], [3, 4]], rows[0].keys()


def test_a_sigterm_during_the_final_evaluation_ends_the_run_as_interrupted(data, tmp_path):
    # outside Lightning's fit, where Lightning's own SIGTERM handler is not installed
    run_dir = tmp_path / "run"
    result = Launcher.shared().run(train_args(data, run_dir, "train.max_steps=2"), die="final-eval:term")
    assert result.returncode == EXIT_INTERRUPTED, result.output[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"]


def test_a_ctrl_c_during_the_final_evaluation_says_so_in_one_line(data, tmp_path):
    """Lightning handles Ctrl-C inside fit; after it (the final evaluation) it was a traceback."""
    run_dir = tmp_path / "run"
    result = Launcher.shared().run(train_args(data, run_dir, "train.max_steps=2"), die="final-eval:int")
    assert result.returncode == EXIT_CTRL_C, result.output[-3000:]
    assert f"[urlkit] interrupted; resume={run_dir} continues the run" in result.output
    assert "Traceback" not in result.output and "KeyboardInterrupt" not in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["error"] == "KeyboardInterrupt"

