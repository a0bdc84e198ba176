"""One study process trains a run folder at a time: ``train.lock`` in the folder, naming its holder.

Two ``python -m urlkit.study`` over the same experiments (two terminals, two SLURM jobs on a
shared filesystem) would otherwise start the same run twice into one folder. The lock is a
file created atomically (``O_CREAT | O_EXCL``, which NFS honours too) holding the holder's host,
pid and start time; it is removed when the run ends. A lock left by a study killed outright
(SIGKILL, out of memory) is taken over when its pid is dead on this host; on another host its
pid cannot be checked, so the error names the file to delete once that process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from urlkit.atomic import process_alive

LOCK_FILE = "train.lock"


class RunLocked(RuntimeError):
    """Another process holds the run folder."""


def _describe(holder: dict) -> str:
    if not holder:  # cut short: being written this instant, or its holder died writing it
        return "a lock that names no holder"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"


def acquire(run_dir: Path) -> Path:
    """Create ``run_dir/train.lock`` for this process, or raise :class:`RunLocked` naming the
    holder. A lock whose pid is dead on this host is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):  # a stale lock taken over, then created; a race lost is re-read
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = _read(path)
            if text is None:  # removed meanwhile (its run ended): try again
                continue
            holder = _parse(text)
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not process_alive(holder["pid"]):
                _take_over(path, text)
                continue
            raise RunLocked(
                f"{run_dir} is being trained by another study ({_describe(holder)}; lock file {path}); "
                "skipped. If that process is gone (another host's pid cannot be checked from here), "
                f"delete {path} and run the study again"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path
    raise RunLocked(f"{run_dir}: could not take {path} (other processes kept taking it); skipped")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's (not one taken over after a hang)."""
    holder = _parse(_read(path) or "")
    if holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _parse(text: str) -> dict:
    """The holder a lock names; {} for one cut short (its holder died while writing it: a
    lock held that long would have its line)."""
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _take_over(path: Path, stale: str) -> None:
    """Remove the stale lock ``stale``, unless another process has taken it over already: it is
    moved aside first (a rename is atomic, so of two processes taking it over one moves it),
    and put back when what was moved is no longer the stale lock but a live one."""
    aside = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) == stale:
        aside.unlink(missing_ok=True)
        return
    try:
        os.link(aside, path)  # put the live lock back, unless yet another has been made
    except FileExistsError:
        pass
    aside.unlink(missing_ok=True)
