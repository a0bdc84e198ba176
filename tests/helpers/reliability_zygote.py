"""A process that imports urlkit's training stack once and forks one real training process per run.

Importing lightning, transformers, peft and torchmetrics takes 10-15 s, longer than training
the tiny model; the reliability tests start many runs. This process (started by
``reliability_helpers.Launcher``) pays the imports once, then reads one JSON line per request
on stdin, ``[{"argv": [...], "die": "step:2", "log": "/path", "env": {...}}, ...]``, forks one
child per job (all at once: parallel runs), waits for them and answers one JSON line with
their exit statuses (``-9`` = killed by SIGKILL, ``"timeout"``). It never runs a tensor
operation itself, so forking it is as safe as starting a fresh interpreter.

Each child is an ordinary ``python -m urlkit.run <argv>``: stdin closed, stdout and stderr to
``log``, ``env`` applied (None removes a variable), and one hook that sends SIGKILL to the
process itself at the point ``die`` names (``none``: no hook):

    step:K       right after the history row of optimizer step K is written
    step:K+Ss    S seconds after that (the process had moved on when it was killed)
    term:K       SIGTERM instead of SIGKILL after step K (a scheduler's pre-emption notice)
    usr1:K       SIGUSR1 instead of SIGKILL after step K (SLURM's --signal=USR1@<s>: time limit near)
    save:K       in the middle of writing the checkpoint of step K (half the bytes are on disk)
    final-eval   during the final test evaluation, after the reranker's results were written
    final-eval:term  SIGTERM instead of SIGKILL at that point (outside Lightning's fit)
    final-eval:int   SIGINT (Ctrl-C) instead of SIGKILL at that point

SIGKILL cannot be caught: nothing of urlkit runs after it, as when a scheduler pre-empts the
job or the machine runs out of memory. Killing at a chosen point instead of after a timer
keeps the tests deterministic on a loaded machine.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import traceback


def preload() -> None:
    """Import what every run imports (no computation: the children start from here)."""
    import lightning  # noqa: F401
    import peft  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    import urlkit.build  # noqa: F401
    import urlkit.run  # noqa: F401
    import urlkit.training.callbacks  # noqa: F401
    import urlkit.training.checkpointing  # noqa: F401
    import urlkit.training.module  # noqa: F401


def serve() -> None:
    preload()
    print("ready", flush=True)
    for line in sys.stdin:
        jobs = json.loads(line)
        children = [start(job) for job in jobs]
        deadline = time.monotonic() + max(job.get("timeout", 300) for job in jobs)
        print(json.dumps([finish(pid, deadline) for pid in children]), flush=True)


def start(job: dict) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: from here on an ordinary `python -m urlkit.run`
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
        # Python's own Ctrl-C handler, as a python started from a terminal has: Python installs
        # none where SIGINT was ignored at its start (the tests run as a job started with `&` by
        # a shell without job control), and a SIGINT would then do nothing
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for key, value in job.get("env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        install(job.get("die", "none"))
        sys.argv = ["urlkit.run", *job["argv"]]
        from urlkit.run import main

        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)  # unwinds out of serve(): atexit handlers (W&B) run as in any process


def finish(pid: int, deadline: float) -> int | str:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


# -- the kill hooks, installed in the child that is to die ------------------------------------
def _die(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), sig)


def _die_after_step(step: int, delay_s: float = 0.0, sig: int = signal.SIGKILL) -> None:
    from urlkit.training.module import RerankerModule

    log_step = RerankerModule._log_step

    def logged_then_killed(self, *args, **kwargs):
        log_step(self, *args, **kwargs)
        if self.global_step == step:
            time.sleep(delay_s)
            _die(sig)

    RerankerModule._log_step = logged_then_killed


def _die_while_saving(step: int) -> None:
    import torch

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

    torch.save = half_written_then_killed  # what urlkit.training.checkpointing.atomic_torch_save calls


def _die_in_final_evaluation(sig: int = signal.SIGKILL) -> None:
    import urlkit.training.callbacks

    save_evaluation = urlkit.training.callbacks.save_evaluation
    calls = []

    def second_call_killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the reranker's per-query files and eval.csv row are written
            _die(sig)
        return save_evaluation(*args, **kwargs)

    urlkit.training.callbacks.save_evaluation = second_call_killed


def install(point: str) -> None:
    kind, _, value = point.partition(":")
    step, _, delay = value.partition("+")
    hooks = {
        "step": lambda: _die_after_step(int(step), float(delay.rstrip("s") or 0)),
        "term": lambda: _die_after_step(int(step), sig=signal.SIGTERM),
        "usr1": lambda: _die_after_step(int(step), sig=signal.SIGUSR1),
        "save": lambda: _die_while_saving(int(step)),
        "final-eval": lambda: _die_in_final_evaluation(
            {"term": signal.SIGTERM, "int": signal.SIGINT}.get(value, signal.SIGKILL)),
        "none": lambda: None,
    }
    hooks[kind]()


if __name__ == "__main__":
    serve()
