"""Tiny training runs for the reliability tests: launched as real processes, or composed in-process.

:class:`Launcher` starts ``reliability_zygote.py`` (one import of the training stack) and runs
``python -m urlkit.run`` jobs as forked children of it, optionally SIGKILLed at a chosen point;
:func:`compose_run` composes the same config for an uninterrupted run in-process.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir

from urlkit.config import register_resolvers
from urlkit.paths import REPO_ROOT

TINY = [
    "model=tiny", "logger=none", "train.warmup_steps=2", "eval.every_n_steps=0", "eval.batch_size=8",
    "eval.test_queries=3", "data.n_negatives=3", "+trainer.enable_progress_bar=false",
]  # fmt: skip
ZYGOTE = Path(__file__).with_name("reliability_zygote.py")


def tiny(*overrides: str) -> list[str]:
    """The tiny settings, less those ``overrides`` set (Hydra refuses two values for a group)."""
    keys = {override.split("=")[0].lstrip("+") for override in overrides}
    return [setting for setting in TINY if setting.split("=")[0].lstrip("+") not in keys]


def train_args(data: Path, run_dir: Path, *overrides: str) -> list[str]:
    """``python -m urlkit.run`` arguments of a tiny run of ``data`` in ``run_dir``."""
    return [*tiny(*overrides), f"data.path={data}", f"hydra.run.dir={run_dir}", *overrides]


def compose_run(data: Path, *overrides: str):
    """The config :func:`train_args` makes, for an uninterrupted run in-process."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*tiny(*overrides), f"data.path={data}", *overrides])


@dataclass
class Finished:
    returncode: int | str  # -9: killed by SIGKILL; "timeout": killed after the time limit
    output: str  # stdout and stderr


class Launcher:
    """Runs ``python -m urlkit.run`` processes, forked from one that imported everything once.

    ``env`` (None removes a variable) is the launcher's environment, inherited by every run.
    """

    def __init__(self, env: dict[str, str | None] | None = None):
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.logs = Path(tempfile.mkdtemp(prefix="urlkit-runs-"))
        self.process = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={k: v for k, v in environment.items() if v is not None}, text=True,
        )  # fmt: skip
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{ZYGOTE.name} did not start (exit status {self.process.wait()})")
        self._count = 0

    def run(self, argv: list[str], die: str = "none", env: dict | None = None, timeout: float = 300) -> Finished:
        return self.run_together([argv], die=die, env=env, timeout=timeout)[0]

    def run_together(self, argvs: list[list[str]], die: str = "none", env: dict | None = None,
                     timeout: float = 300) -> list[Finished]:  # fmt: skip
        """Start every run at once, wait for all (the launcher kills any past ``timeout``)."""
        jobs = []
        for argv in argvs:
            self._count += 1
            log = self.logs / f"run-{self._count}.log"
            jobs.append({"argv": argv, "die": die, "env": env or {}, "log": str(log), "timeout": timeout})
        self.process.stdin.write(json.dumps(jobs) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"{ZYGOTE.name} died (exit status {self.process.wait()})")
        return [Finished(code, Path(job["log"]).read_text()) for code, job in zip(json.loads(answer), jobs, strict=True)]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)

    @classmethod
    def shared(cls) -> Launcher:
        """One launcher with this process's environment for the whole test session."""
        global _SHARED
        if _SHARED is None:
            _SHARED = cls()
            atexit.register(_SHARED.close)
        return _SHARED


_SHARED: Launcher | None = None


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def evaluations(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "eval.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())
