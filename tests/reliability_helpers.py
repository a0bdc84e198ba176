"""Kill a real training process with SIGKILL at an exact point, and compose the same run in-process.

``python tests/reliability_helpers.py <point> <hydra overrides...>`` runs ``python -m urlkit.run
<overrides>`` in this process after installing one hook that sends SIGKILL to the process
itself at ``<point>`` (``none`` for no hook):

    step:K       right after the history row of optimizer step K is written
    step:K+Ss    S seconds after that (the process had moved on when it was killed)
    save:K       in the middle of writing the checkpoint of step K (half the bytes are on disk)
    final-eval   during the final test evaluation, after the reranker's results were written

SIGKILL cannot be caught: nothing of urlkit runs after it, exactly as when a scheduler
pre-empts the job or the machine runs out of memory. Killing at a chosen point instead of
after a timer makes the tests deterministic on a loaded machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from urlkit.paths import REPO_ROOT
from urlkit.resolvers import register_resolvers

TINY = [
    "model=tiny", "logger=none", "train.warmup_steps=2", "eval.every_n_steps=0", "eval.batch_size=8",
    "eval.test_queries=3", "data.n_negatives=3", "+trainer.enable_progress_bar=false",
]  # fmt: skip


def train_command(data: Path, run_dir: Path, *overrides: str, die: str = "none") -> list[str]:
    """The command line of a tiny training run in ``run_dir`` that dies at ``die``."""
    return [sys.executable, str(Path(__file__).resolve()), die, *tiny(*overrides), f"data.path={data}",
            f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip


def tiny(*overrides: str) -> list[str]:
    """The tiny settings, less those ``overrides`` set (Hydra refuses two values for a group)."""
    keys = {override.split("=")[0].lstrip("+") for override in overrides}
    return [setting for setting in TINY if setting.split("=")[0].lstrip("+") not in keys]


def resume_command(run_dir: Path, die: str = "none") -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), die, f"resume={run_dir}"]


def run(command: list[str], timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command with stdin closed; the environment is this one updated with ``env``
    (a None value removes the variable)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        command, cwd=REPO_ROOT, env={k: v for k, v in environment.items() if v is not None},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def compose_run(data: Path, *overrides: str):
    """The config ``train_command`` composes, for an uninterrupted run in-process."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*tiny(*overrides), f"data.path={data}", *overrides])


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def evaluations(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "eval.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


# -- the hooks, installed in the process that is to die --------------------------------------
def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _die_after_step(step: int, delay_s: float = 0.0) -> None:
    from urlkit.module import RerankerModule

    log_step = RerankerModule._log_step

    def logged_then_killed(self, skipped):
        log_step(self, skipped)
        if self.global_step == step:
            time.sleep(delay_s)
            _die()

    RerankerModule._log_step = logged_then_killed


def _die_while_saving(step: int) -> None:
    import torch

    import urlkit.checkpointing

    save = torch.save

    def half_written_then_killed(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == step and hasattr(f, "write"):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            _die()
        return save(obj, f, *args, **kwargs)

    urlkit.checkpointing.torch.save = half_written_then_killed


def _die_in_final_evaluation() -> None:
    import urlkit.callbacks

    save_evaluation = urlkit.callbacks.save_evaluation
    calls = []

    def second_call_killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the reranker's per-query files and eval.csv row are written
            _die()
        return save_evaluation(*args, **kwargs)

    urlkit.callbacks.save_evaluation = second_call_killed


def install(point: str) -> None:
    kind, _, value = point.partition(":")
    hooks = {
        "step": lambda: _die_after_step(int(value.split("+")[0]), float(value.partition("+")[2].rstrip("s") or 0)),
        "save": lambda: _die_while_saving(int(value)),
        "final-eval": _die_in_final_evaluation,
        "none": lambda: None,
    }
    hooks[kind]()


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["urlkit.run", *sys.argv[2:]]
    from urlkit.run import main

    main()
