"""Stopping on a scheduler's signal without losing a step: checkpoint at the step boundary, then stop.

* **SIGTERM** (a pre-emption, ``scancel``, ``scontrol requeue``; any scheduler, or ``kill``):
  :class:`PreemptionCheckpoint` writes ``checkpoints/last.ckpt`` when the step in flight ends,
  then stops the run, so that ``resume=`` (or the requeued SLURM job, :mod:`urlkit.slurm`)
  continues from it instead of the last periodic checkpoint.
* **SIGUSR1 in a SLURM job** (``#SBATCH --signal=USR1@<seconds>``: the time limit is near):
  the same checkpoint, then ``scontrol requeue <job>`` (by global rank 0) and the run stops as
  ``interrupted``; SLURM starts the job again and it continues its run.

Lightning's own handling of that signal (``SLURMEnvironment(auto_requeue=True)``, its default
under SLURM) is switched off (:func:`cluster_plugins`): it writes ``hpc_ckpt_<n>.ckpt`` from
inside the signal handler, at whatever point of the step the signal lands (not a point an
exact resume can start from; under DDP the save's collectives would run inside a handler,
each rank at another point), and lets training go on; urlkit's resume reads ``last.ckpt``.

The decision to stop is taken between optimizer steps (never between the micro-batches of
one) and under DDP agreed by every rank, so every rank saves, and stops, at the same step. The
agreement costs no collective and no host sync of its own: the callback hands its notices to
the training module (``RerankerModule.notices``), which max-reduces them over the ranks with
the step's telemetry and the non-finite guard's flags, read back with them in the step's one
host sync before the update (``RerankerModule.agreed_notices``). A notice that comes
after that reduce (during the update, the logging, a dev evaluation) is therefore agreed with
the next step and acted on at its end; one process acts on it at the end of the step in flight.

For that, the callback holds SIGTERM during training (from ``on_train_start``, after
Lightning installed its handler, until Lightning restores the handlers it found when fit
ends): Lightning's handler sets a flag each rank acts on alone after any batch (under DDP a
rank whose notice came after the step's reduce would stop without the others, which then wait
in the next collective, and a notice between micro-batches would stop the step unsaved), and
under DDP broadcasts from inside the handler, at whatever point of the step it lands.

Whatever ends fit (a finished run, a crash, this callback's own stop), the handlers found
before it are in place afterwards (:func:`signal_handlers_kept`, around ``trainer.fit``): a
notebook or a study running many runs in one interpreter keeps its own.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from urlkit import slurm
from urlkit.training import distributed

REQUEUE_SIGNAL = signal.SIGUSR1  # Lightning's, and what SLURM's --signal users are told to send


class RequeueStop(SIGTERMException):
    """The run stopped because SLURM's requeue signal asked it to (after its checkpoint); a
    SystemExit, as Lightning's SIGTERM stop, so the run ends ``interrupted`` (exit status 143)."""


def cluster_plugins() -> list:
    """``[SLURMEnvironment(auto_requeue=False)]`` where Lightning would detect SLURM (its own
    environment, auto-requeue on, otherwise), else nothing: the requeue signal is urlkit's."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect() or not SLURMEnvironment.detect():  # torchrun inside SLURM wins
        return []
    return [SLURMEnvironment(auto_requeue=False)]


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put back the SIGTERM and requeue-signal handlers found on entry when the block ends, for any
    reason. Around ``trainer.fit``: Lightning calls no callback's ``teardown`` when fit fails
    (an error, or :class:`PreemptionCheckpoint`'s own stop), and its own restore, which does run
    then, puts back the handlers it found after ``setup``, the requeue handler of this module's
    callback among them (an ``on_exception`` hook runs before that restore: too early)."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, REQUEUE_SIGNAL)}
    try:
        yield
    finally:
        for signum, handler in found.items():
            if handler is not None:  # None: a handler not set from Python, which Python cannot set back
                signal.signal(signum, handler)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM, or SLURM's requeue signal: save ``checkpoint`` at the end of the step, then stop."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.requeue_asked = False
        self.sigterm_received = False
        self._previous = None
        self._previous_sigterm = None

    def notices(self) -> list[bool]:
        """``[SIGTERM, requeue]`` as this process has received them (sticky: never reset)."""
        return [self.sigterm_received, self.requeue_asked]

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.notices = self.notices  # reduced over the ranks with the step's telemetry
        # only in a SLURM job: elsewhere SIGUSR1 keeps its meaning (by default, it ends the process)
        if slurm.job_id() and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(REQUEUE_SIGNAL, self._ask_requeue)

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installs its SIGTERM handler when fit starts (after setup) and puts back the
        # handlers it found when fit ends (or fails); in between, the notice is this callback's
        if threading.current_thread() is threading.main_thread():
            self.sigterm_received = self.sigterm_received or bool(trainer.received_sigterm)
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._note_sigterm)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None:
            signal.signal(REQUEUE_SIGNAL, self._previous)
            self._previous = None
        if self._previous_sigterm is not None:
            if signal.getsignal(signal.SIGTERM) == self._note_sigterm:  # Lightning has not restored its own
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
            if self.sigterm_received:  # too late for the last step's decision: the handler now in place acts on it
                signal.raise_signal(signal.SIGTERM)

    def _ask_requeue(self, signum, frame) -> None:
        self.requeue_asked = True  # acted on between steps: a handler runs at any point of a step

    def _note_sigterm(self, signum, frame) -> None:
        self.sigterm_received = True  # likewise

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not getattr(pl_module, "between_steps", True):  # a micro-batch of a step not finished yet
            return
        # one process: the notices as they stand; several: as the step's reduce agreed them
        # (every rank stops at the same step, or the collectives would pair wrong)
        sigterm, requeue = self.notices() if distributed.world_size() == 1 else pl_module.agreed_notices
        if not (sigterm or requeue):
            return
        trainer.save_checkpoint(self.checkpoint)  # every rank calls it; Lightning writes on rank 0
        if trainer.is_global_zero:
            why = "SIGTERM" if sigterm else f"{signal.Signals(REQUEUE_SIGNAL).name} (SLURM's requeue signal)"
            print(f"\n[urlkit] {why}: saved the checkpoint of step {trainer.global_step} to {self.checkpoint}; "
                  "stopping", file=sys.stderr, flush=True)  # fmt: skip
            if requeue:
                requeue_job()
        if requeue and not sigterm:
            raise RequeueStop()
        raise SIGTERMException()  # what Lightning raises on its own notice; raised here on every rank alike


def requeue_job() -> None:
    """``scontrol requeue`` this job; a failure is said, not raised (the checkpoint is saved:
    ``resume=<run dir>`` by hand continues the run)."""
    command = slurm.requeue_command()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"[urlkit] warning: {' '.join(command)} failed ({err}); the job is not requeued", file=sys.stderr,
              flush=True)  # fmt: skip
        return
    if result.returncode != 0:
        print(f"[urlkit] warning: {' '.join(command)} exited with {result.returncode} "
              f"({result.stderr.strip()[:300]}); the job is not requeued", file=sys.stderr, flush=True)  # fmt: skip
    else:
        print(f"[urlkit] requeued SLURM job {command[-1]}", file=sys.stderr, flush=True)
