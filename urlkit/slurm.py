"""A SLURM job that is requeued continues its own run (docs/reliability.md, "SLURM: requeued jobs").

SLURM requeues a job (``#SBATCH --requeue`` and a pre-emption, ``scontrol requeue``, or
urlkit's own requeue on the time-limit signal, :mod:`urlkit.training.preemption`) by running
its batch script again: the same command line, the same ``SLURM_JOB_ID``, and
``SLURM_RESTART_COUNT`` >= 1. Rank 0 records in run.json which job started the run and with
which command (:func:`job_record`: ``"slurm": {"job_id": ..., "overrides": [...]}``); a
requeued process finds that run (:func:`requeued_run`) and ``python -m urlkit.run`` continues
it as ``resume=<run dir>`` would: same directory, newest checkpoint, same W&B run id.

The command line is part of the key because one job script may train several runs one after
the other (a loop over seeds): each command, run again, finds its own run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from urlkit.errors import ConfigError
from urlkit.records import read_run_info


def job_id() -> str | None:
    """The SLURM job this process runs in (None outside SLURM). A requeued job keeps it; each
    task of a job array has its own."""
    return os.environ.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    """How many times SLURM has requeued this job (0: its first start, or outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def requeued() -> bool:
    return job_id() is not None and restart_count() > 0


def job_record(overrides: Iterable[str]) -> dict | None:
    """run.json's ``slurm`` entry: the job and the command line's overrides (None outside SLURM)."""
    job = job_id()
    return {"job_id": job, "overrides": [str(o) for o in overrides]} if job else None


def started_by_this_job(run_dir: str | Path, overrides: Iterable[str]) -> bool:
    """Whether ``run_dir``'s run.json says this SLURM job started it with this command line."""
    try:
        info = read_run_info(Path(run_dir))
    except ConfigError:  # a damaged run.json: not recognisably ours, refused as any other run
        return False
    record = info.get("slurm")
    return isinstance(record, dict) and record == job_record(overrides)


def requeued_run(output_root: str | Path, overrides: Iterable[str]) -> Path | None:
    """The run directory under ``<output_root>/runs/`` that this requeued job started with
    this command line (None: not requeued, or the first start died before it wrote run.json).
    Two matches (the same command twice in one job script) are an error naming them: which
    one this is cannot be told."""
    if not requeued():
        return None
    overrides = list(overrides)
    job = job_id()
    found = []
    for record in sorted(Path(output_root, "runs").glob("*/run.json")):
        # most runs are other jobs': a look at the text before parsing every run.json
        if f'"{job}"' in record.read_text(errors="replace") and started_by_this_job(record.parent, overrides):
            found.append(record.parent)
    if len(found) > 1:
        raise ConfigError(
            f"SLURM job {job} was requeued, and it started this command more than once: "
            f"{', '.join(map(str, found))}. Continue one of them with resume=<run dir>"
        )
    return found[0] if found else None


def requeue_command() -> list[str]:
    """``scontrol requeue <job>`` for this job (a task of a job array as ``<array job>_<task>``)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    return ["scontrol", "requeue", job]
