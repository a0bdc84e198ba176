"""Checking the pictures a dataset names: how hard (``data.check_pictures``) and on how many
threads.

A loader checks every picture its lines name when it reads them
(:meth:`~urlkit.data.reading.LineFields.image`), so a missing or corrupt one is an error naming
its line in the first minutes, not in a batch hours into training. One after the other, that
is one ``stat``, ``open`` and read per picture in series: 60-200 us of CPU work each from a
local disk's page cache (docs/data.md), plus 1-5 ms of waiting on a network file system, so M-BEIR's million pictures cost minutes to over
an hour of start-up. :meth:`PictureChecks.ahead` starts the check of each line's
picture as the line is read, up to :data:`WINDOW` lines ahead of the line being built, on
:data:`THREADS` threads (opening, reading and ``stat`` release the GIL); the builder takes each
result in line order, so the errors, the skipped lines and their counts are exactly those of
checking one picture after the other, and a line the builder never asks about (another
dataset's candidate of M-BEIR's union pool) costs at most a check that was not needed.

``check_pictures``: ``verify`` (the default) opens each picture and runs PIL's ``verify()``
(:func:`~urlkit.data.images.picture_problem`); ``exists`` only looks for the file, as loaders
did before ``verify`` (a corrupt picture is then found when a batch reads it).

Under DDP every rank loads the same splits before the ranks connect. A :class:`PictureShare`
(the training run's rank and world size) makes each rank open and verify only its share of the
pictures, chosen by the picture's name as the line writes it, so every rank agrees without
talking and the R ranks together open each picture once, not R times; every rank still looks
for every file (a ``stat``), so a missing picture stops (or is skipped by) every rank alike. A
corrupt picture stops the rank whose share it is, with the DataError naming its line.
"""

from __future__ import annotations

import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from urlkit.data.images import picture_problem

CHECK_PICTURES = ("verify", "exists")
# Threads waiting on the file system: on a network file system each check is mostly a wait
# (1-5 ms), so more threads than cores pay; in the page cache PIL's parsing holds the GIL and
# the threads take turns (docs/data.md has the measurements).
THREADS = 32
# Pictures per task handed to a thread: handing over a task (a future, a queue, a wake-up)
# costs about as much CPU as an exists check, so one per picture would double that check.
BATCH = 16
# Lines read (and their pictures being checked) ahead of the line being built: enough to keep
# the threads busy, few enough that the records held in memory do not matter.
WINDOW = 1024


@dataclass(frozen=True)
class PictureField:
    """The field of a file's lines that names a picture, relative to ``root``; ``wanted``: which
    lines the builder asks about (None: every line), so no other line's picture is checked."""

    key: str
    root: Path
    wanted: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class PictureShare:
    """Rank ``rank`` of ``world`` processes that load the same data: the pictures this rank
    opens and verifies (:meth:`verifies`); the others' pictures it only looks for."""

    rank: int
    world: int

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not one of the {self.world} ranks of the run")

    def verifies(self, raw: str) -> bool:
        """Whether this rank verifies the picture the lines name ``raw``: its name's CRC-32
        modulo the world size, the same answer on every rank and node (Python's ``hash`` is
        salted per process), whatever the order the lines are read in."""
        return zlib.crc32(raw.encode("utf-8", "surrogatepass")) % self.world == self.rank


class Finding(NamedTuple):
    """What a look at one picture found: its absolute path, whether there is no file there, and
    why it cannot be read (None: it can, or ``exists`` did not look)."""

    resolved: Path
    missing: bool
    problem: str | None


def look_at_picture(root: Path, raw: str, mode: str) -> Finding:
    """The picture ``raw`` (relative to ``root``) looked at as ``mode`` says."""
    resolved = (root / raw).resolve()
    if not resolved.is_file():
        return Finding(resolved, True, None)
    return Finding(resolved, False, picture_problem(str(resolved)) if mode == "verify" else None)


class PictureChecks:
    """One load's picture checks: ``mode`` (one of :data:`CHECK_PICTURES`) and the checks started
    ahead of the lines being built (:meth:`ahead`), which :meth:`finding` hands out. ``share``:
    the pictures this rank verifies (None: all); the others get ``exists``."""

    def __init__(self, mode: str = "verify", share: PictureShare | None = None):
        if mode not in CHECK_PICTURES:
            raise ValueError(f"check_pictures (data.check_pictures) must be one of {CHECK_PICTURES}, got {mode!r}")
        self.mode = mode
        self.share = share
        # (root, raw) -> the batch checking it (None: in the batch not yet started)
        self._pending: dict[tuple[Path, str], Future[dict] | None] = {}
        self._batch: list[tuple[Path, str]] = []
        self._batch_size = BATCH
        self._pool: ThreadPoolExecutor | None = None

    def finding(self, root: Path, raw: str) -> Finding:
        """The picture ``raw`` relative to ``root``: the check started ahead, else one now."""
        key = (root, raw)
        if key in self._pending and self._pending[key] is None:
            self._start_batch()
        future = self._pending.get(key)
        if future is None:
            return look_at_picture(root, raw, self.mode_for(raw))
        found = future.result()[key]
        if isinstance(found, BaseException):
            raise found  # as the check itself would have raised it, here, in line order
        return found

    def mode_for(self, raw: str) -> str:
        """How hard this rank looks at the picture ``raw``: ``exists`` where another rank verifies it."""
        if self.share is None or self.mode != "verify" or self.share.verifies(raw):
            return self.mode
        return "exists"

    def ahead(self, lines: Iterator[tuple[int, dict[str, Any]]],
              field: PictureField) -> Iterator[tuple[int, dict[str, Any]]]:
        """``lines`` as they come, each held back until the pictures of up to :data:`WINDOW`
        lines after it are being checked. A line's check is dropped once the builder has
        moved on to the next line (a picture named by lines in the window is checked once);
        closing the iterator (a load that stops at an error) cancels the checks not started."""
        window: deque[tuple[int, dict[str, Any], tuple[Path, str] | None]] = deque()
        users: Counter[tuple[Path, str]] = Counter()
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="urlkit-pictures")
        self._batch_size = max(1, min(BATCH, WINDOW // (2 * THREADS)))  # a window holds work for every thread
        try:
            for line_no, record in lines:
                window.append((line_no, record, self._enqueue(record, field, users)))
                if len(window) > WINDOW:
                    yield from self._hand_out(window.popleft(), users)
            self._start_batch()
            while window:
                yield from self._hand_out(window.popleft(), users)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pending.clear()
            self._batch.clear()

    def _enqueue(self, record: dict[str, Any], field: PictureField,
                 users: Counter[tuple[Path, str]]) -> tuple[Path, str] | None:
        raw = record.get(field.key)
        if not isinstance(raw, str) or not raw or (field.wanted is not None and not field.wanted(record)):
            return None  # no picture, or the builder rejects the line anyway: it checks (or not) itself
        key = (field.root, raw)
        if not users[key]:
            self._pending[key] = None
            self._batch.append(key)
            if len(self._batch) >= self._batch_size:
                self._start_batch()
        users[key] += 1
        return key

    def _start_batch(self) -> None:
        if not self._batch or self._pool is None:
            return
        future = self._pool.submit(_look_at_pictures, self._batch, [self.mode_for(raw) for _, raw in self._batch])
        for key in self._batch:
            self._pending[key] = future
        self._batch = []

    def _hand_out(self, entry: tuple[int, dict[str, Any], tuple[Path, str] | None],
                  users: Counter[tuple[Path, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
        line_no, record, key = entry
        yield line_no, record
        if key is not None:  # the builder has finished with the line
            users[key] -= 1
            if not users[key]:
                del users[key], self._pending[key]


def _look_at_pictures(keys: list[tuple[Path, str]],
                      modes: list[str]) -> dict[tuple[Path, str], Finding | BaseException]:
    """One thread's batch: each picture's finding (as its mode says), or the exception looking
    at it raised."""
    found: dict[tuple[Path, str], Finding | BaseException] = {}
    for (root, raw), mode in zip(keys, modes, strict=True):
        try:
            found[root, raw] = look_at_picture(root, raw, mode)
        except Exception as err:  # noqa: BLE001 -- raised again by finding(), for the line that named it
            found[root, raw] = err
    return found
