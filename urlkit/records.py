"""The run directory: everything a run leaves behind, in open formats.

Notebooks and ``urlkit.analysis`` read these files (never W&B alone), so a run with W&B
offline or disabled is still fully analysable::

    <run dir>/
      config.yaml      the resolved Hydra config
      run.json         run id, W&B id, status, start and end time, wall time (s), host, pid
      history.csv      one row per optimizer step (loss, weights, counterfactual weights, ...)
      eval.csv         one row per (step, split, dataset) evaluation, metric columns
      metrics.json     final metrics (test split), flat "split/dataset/metric" keys
      per_query/       per-query metrics and TREC run files of the final evaluation
      benchmark/       with benchmark=<suite>: each dataset's result, per_query/ of the suite's
      benchmark.csv    ... and the suite's table
      checkpoints/     LoRA adapter + head + optimizer state (Lightning checkpoints)
      wandb/           the W&B run (offline runs can be synced later)
      experiments.txt  the other experiments a study shared the run with (urlkit/study/plan.py)
      train.lock       while a study trains the run: its host and pid (urlkit/study/lock.py)

History rows are appended, flushed and fsynced as training goes, so a killed run loses at
most the step in flight; a row cut short by the kill is dropped when the file is reopened.
On resume the history is cut back to the checkpoint's step so that no step is duplicated or
missing; every other file is replaced atomically (write, fsync, rename). See
docs/reliability.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from urlkit.atomic import atomic_write
from urlkit.errors import ConfigError

ENDED = ("finished", "failed", "interrupted")
"""The statuses that end a run (its attempt): run.json gets ``ended`` and ``wall_time_s`` with them."""


def new_run_id() -> str:
    """Short, unique even for runs started in the same second by parallel sweep agents."""
    return f"{uuid.uuid4().hex[:8]}"


def folder_run_id(path: Path) -> str | None:
    """The id a run folder's name ends with (``<time>_<run name>_<id>``, config.run_dir), so
    that run.json names a run as its folder does; None for a folder named otherwise."""
    match = re.search(r"_([0-9a-f]{8})$", Path(path).name)
    return match.group(1) if match else None


def read_run_info(run_dir: Path) -> dict:
    """A run folder's run.json ({} when there is none), read without touching the folder (a
    :class:`RunDirectory` creates it and tidies its CSVs); one damaged (a copy cut short, a hand
    edit) is an error naming it, not a JSON parser's traceback."""
    f = Path(run_dir) / "run.json"
    if not f.exists():
        return {}
    try:
        info = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{f} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(info, dict):
        raise ConfigError(f"{f} is not a run record (a JSON {type(info).__name__}, not an object)")
    return info


# the experiments a study shared the run with, one a line (urlkit/study/plan.py appends them):
# the run is a grid point of each besides its config's experiment_name
EXPERIMENTS_FILE = "experiments.txt"


def served_experiments(run_dir: Path) -> list[str]:
    """The experiments ``run_dir``'s ``experiments.txt`` names, in order, once each ([]
    without one); an unreadable one is an error naming it."""
    f = Path(run_dir) / EXPERIMENTS_FILE
    if not f.exists():
        return []
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{f} cannot be read ({type(err).__name__}: {err})") from err
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def atomic_write_text(path: Path, text: str) -> None:
    """Write, fsync, then rename: a kill mid-write leaves the previous file intact."""
    atomic_write(path, lambda f: f.write(text))


class CsvLog:
    """An append-only CSV whose header grows when new columns appear (rare: rewritten once).

    Every row is flushed and fsynced as it is appended. Opening the file drops a last row
    without its newline: what a process killed in the middle of ``append`` leaves behind.
    """

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        if path.exists() and path.stat().st_size > 0:
            self._drop_partial_row()
            with path.open(newline="") as f:
                self.columns = next(csv.reader(f), [])

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def append(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = self.rows()
            self.columns += new
            self._rewrite(old_rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _plain(v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int, key: str = "step") -> int:
        """Drop rows with ``key`` > step (the steps a killed run logged after its checkpoint)."""
        return self.drop(lambda row: row.get(key, "") != "" and int(float(row[key])) > step)

    def drop(self, unwanted: Callable[[dict[str, str]], bool]) -> int:
        """Drop the rows for which ``unwanted(row)`` is true (atomically); returns how many."""
        rows = self.rows()
        kept = [row for row in rows if not unwanted(row)]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        def write(f) -> None:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

        atomic_write(self.path, write)

    def _drop_partial_row(self) -> None:
        with self.path.open("rb") as f:
            data = f.read()
        if data.endswith(b"\n"):
            return
        complete = data[: data.rfind(b"\n") + 1]  # b"" when even the header was cut short
        atomic_write(self.path, lambda f: f.write(complete), binary=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # 0-d tensors and numpy scalars
        return value.item()
    return value


class RunDirectory:
    """One run's directory; creating it twice for the same path is safe (resume)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # when this process's attempt at the run began: status=running resets it (a resume)
        self._attempt_start = time.time()
        # the seconds earlier attempts ran (run.json's wall_time_s when status=running began this
        # attempt); None: this object began no attempt, so an end adds to run.json's as it is then
        self._earlier_attempts_s: float | None = None
        self.path.mkdir(parents=True, exist_ok=True)
        self.history = CsvLog(self.path / "history.csv")
        self.evals = CsvLog(self.path / "eval.csv")

    # -- files -------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def per_query(self) -> Path:
        p = self.path / "per_query"
        p.mkdir(exist_ok=True)
        return p

    def last_checkpoint(self) -> Path | None:
        last = self.checkpoints / "last.ckpt"
        return last if last.exists() else None

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def read_info(self) -> dict:
        """run.json ({} when there is none); see :func:`read_run_info`."""
        return read_run_info(self.path)

    def update_info(self, **fields: Any) -> dict:
        """Set ``fields`` in run.json. A ``status`` that ends the run (finished, failed,
        interrupted) also records ``ended`` (local time, as ``started``) and ``wall_time_s``: the
        seconds its attempts ran, each from its ``status=running`` to its end (a resumed run adds
        this attempt's to the earlier ones'; a process killed outright ends nothing and adds
        nothing); ``running`` clears ``ended`` until this attempt ends."""
        info = self.read_info()
        if not info:
            info = {
                "run_id": folder_run_id(self.path) or new_run_id(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "host": socket.gethostname(),
            }
        now, status = time.time(), fields.get("status")
        if status == "running":
            self._attempt_start, self._earlier_attempts_s = now, float(info.get("wall_time_s") or 0.0)
            fields = {**fields, "ended": None}
        elif status in ENDED:
            earlier = self._earlier_attempts_s
            if earlier is None:
                earlier = float(info.get("wall_time_s") or 0.0)
            fields = {**fields, "ended": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
                      "wall_time_s": round(earlier + now - self._attempt_start, 1)}
        info.update(fields, pid=os.getpid())
        atomic_write_text(self.path / "run.json", json.dumps(info, indent=2))
        return info

    def write_metrics(self, metrics: dict[str, float]) -> None:
        atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))

    def read_metrics(self) -> dict[str, float]:
        f = self.path / "metrics.json"
        return json.loads(f.read_text()) if f.exists() else {}
