"""Train a study's runs, one ``python -m urlkit.run`` child process each, with progress lines.

A child per run keeps the study a plain user of the entry point (no library module imports
it), gives each run the memory and thread settings of a fresh process, and lets a failed run
fail alone: the study reports it and goes on. The child writes to the run directory the plan
chose (``hydra.run.dir``); an unfinished one is continued with ``resume=<run dir>``. While it
trains, the study holds the folder's lock (urlkit/study/lock.py): a second study over the same
experiments skips that run and says so, instead of training into the same folder.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from urlkit.study.lock import RunLocked, acquire, release
from urlkit.study.plan import Planned, StudyError


def command(planned: Planned) -> list[str]:
    """The child's command line (run directories may hold ``=`` and ``,``: quoted for Hydra)."""
    quoted = '"' + str(planned.run_dir).replace('"', '\\"') + '"'
    if planned.state == "resume":
        return [sys.executable, "-m", "urlkit.run", f"resume={quoted}"]
    return [sys.executable, "-m", "urlkit.run", *planned.point, f"hydra.run.dir={quoted}"]


class Progress:
    """Prints which run of how many, its step, and the study's ETA (from its steps per second)."""

    def __init__(self, runs: list[Planned], every_s: float):
        self.total_steps = sum(int(p.cfg.train.max_steps) for p in runs if p.state != "finished")
        self.done_steps, self.every_s, self.started = 0, every_s, time.time()
        self.current: Planned | None = None
        self.label, self._stop = "", threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def begin(self, planned: Planned, label: str) -> None:
        self.current, self.label = planned, label
        print(
            f"[study] {label} {planned.run_dir.parent.name}/{planned.run_dir.name} | {self.eta()}",
            flush=True,
        )

    def end(self, planned: Planned) -> None:
        self.done_steps += int(planned.cfg.train.max_steps)
        self.current = None

    def _current_steps(self) -> int:
        history = self.current.run_dir / "history.csv" if self.current else None
        if not history or not history.exists():
            return 0
        return max(0, sum(1 for _ in history.open()) - 1)

    def eta(self) -> str:
        elapsed = time.time() - self.started
        done = self.done_steps + self._current_steps()
        left = self.total_steps - done
        if done == 0:
            return f"{left} steps to go, ETA after the first steps"
        return f"elapsed {_duration(elapsed)}, ETA {_duration(elapsed / done * left)} ({left} of {self.total_steps} steps to go)"

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.current is not None:
                step, of = self._current_steps(), int(self.current.cfg.train.max_steps)
                print(f"[study] {self.label} step {step}/{of} | {self.eta()}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_all(planned: list[Planned], progress_every_s: float = 30.0) -> list[tuple[Planned, str]]:
    """Train every run not finished yet; returns the failures (run, last lines of its log)."""
    failures = []
    todo = [p for p in planned if p.state != "finished"]
    print(
        f"[study] {len(planned)} runs, {len(planned) - len(todo)} already finished, {len(todo)} to train",
        flush=True,
    )
    with Progress(planned, progress_every_s) as progress:
        for i, item in enumerate(todo, 1):
            progress.begin(item, f"run {i}/{len(todo)}")
            try:
                # another study over the same experiments trains it now: not into one folder twice
                lock = acquire(item.run_dir)
            except RunLocked as err:
                failures.append((item, str(err)))
                print(f"[study] SKIPPED {err}", flush=True)
                progress.end(item)
                continue
            try:
                failure = _train(item)
            finally:
                release(lock)
            if failure:  # one failed run must not lose the others' hours
                failures.append((item, failure))
                print(f"[study] FAILED {item.run_dir}: {failure}", flush=True)
            progress.end(item)
    return failures


def _train(item: Planned) -> str | None:
    """Train one run under its lock; the reason it failed, or None."""
    try:
        # another study may have trained (or begun) it between the plan and the lock
        item.state = item.current_state()
    except StudyError as err:
        return str(err)
    if item.state == "finished":
        print(f"[study] {item.run_dir} was finished meanwhile by another study: kept", flush=True)
        return None
    log = item.run_dir.parent / f"{item.run_dir.name}.log"
    with log.open("a") as out:
        code = subprocess.run(command(item), stdout=out, stderr=subprocess.STDOUT).returncode
    if code == 0:
        return None
    tail = [line for line in log.read_text().splitlines() if line.strip()][-1:]
    return f"exit status {code}: {tail[0] if tail else ''} (log: {log})"
