"""Files replaced atomically: written beside their destination, fsynced, then renamed over it.

A process killed mid-write (SIGKILL, out of memory, pre-emption) leaves the previous file
intact and at most a hidden ``.<name>.<pid>.<random>.tmp`` next to it. Run files, checkpoints, first-
stage caches and TREC run files all go through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[Any]], object], *, binary: bool = False,
                 sync_directory: bool = False) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, rename it to ``path``.
    ``sync_directory``: also make the rename itself durable (see :func:`fsync_directory`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per call, not only per process: threads may write the same file at once
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    tmp = Path(name)
    try:
        # text: UTF-8, newlines written as given (csv writes its own line endings)
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(fd, "wb" if binary else "w", **text) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # a full disk or a quota: say which file could not be written
            raise OSError(err.errno, f"{err.strerror or err}; the previous file, if any, is intact",
                          str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX: the directory entry is data too)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def process_alive(pid: int | str) -> bool:
    """Whether process ``pid`` of this host still runs: the writer of a stale temporary file or
    the holder of a lock (a pid that is not a number is no process; another user's is alive)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
