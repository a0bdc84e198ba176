"""Check DDP and FSDP on the GPUs of this machine: ``python scripts/gpu_check.py [--model tiny]``.

Never needed by CI (the CPU/gloo tests in tests/training/test_distributed.py are); run it on
a GPU machine before trusting a cluster run. With R = the number of visible GPUs it trains
the same few steps three ways, in float32 so that the runs can be compared:

    one GPU,  R queries per step          (the reference)
    trainer=ddp  on R GPUs, 1 query each  (must give the reference's history)
    trainer=fsdp on R GPUs, 1 query each  (LoRA with use_orig_params; same check)

and prints, per run, the exit status, the wall time, and the largest relative difference of
the history columns against the reference. Exit status 0 when every run finished and matched
to ``--rtol`` (NCCL and cuBLAS reduce in other orders than gloo on CPU: 1e-3 by default).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPARED = ("loss", "w_pos_mean", "w_neg_mean", "loss_sft_native", "loss_infonce_native", "items_consumed")


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model config (tiny: seconds; smollm2_135m: the default backbone)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps each version trains (default: %(default)s)")
    parser.add_argument("--rtol", type=float, default=1e-3,
                        help="largest relative difference allowed between the histories (default: %(default)s)")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    if gpus == 0:
        print("no CUDA device visible: nothing to check (the CPU/gloo tests cover the logic)")
        return 1
    root = Path(tempfile.mkdtemp(prefix="urlkit-gpu-check-"))
    common = [f"model={args.model}", f"train.max_steps={args.steps}", "train.warmup_steps=1", "logger=none",
              "eval.every_n_steps=0", "eval.test_queries=20", "trainer.precision=32-true", "model.lora.dropout=0.0",
              f"checkpoint.every_n_steps={args.steps}", "+trainer.enable_progress_bar=false"]  # fmt: skip
    runs = {
        "1 GPU": ["trainer=gpu", f"train.queries_per_step={gpus}"],
        f"ddp x{gpus}": ["trainer=ddp", f"trainer.devices={gpus}", "train.queries_per_step=1"],
        f"fsdp x{gpus}": ["trainer=fsdp", f"trainer.devices={gpus}", "train.queries_per_step=1"],
    }
    results, ok = {}, True
    for name, settings in runs.items():
        run_dir = root / name.replace(" ", "_")
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "urlkit.run", *common, *settings, f"hydra.run.dir={run_dir}"],
                              capture_output=True, text=True)  # fmt: skip
        seconds = time.monotonic() - began
        rows = _history(run_dir)
        results[name] = rows
        worst = _worst_difference(rows, results["1 GPU"]) if name != "1 GPU" and rows else 0.0
        passed = done.returncode == 0 and len(rows) == args.steps and worst <= args.rtol
        ok &= passed
        print(f"{name:>10}: exit {done.returncode}, {seconds:6.1f} s, {len(rows)} steps, "
              f"largest relative difference to 1 GPU {worst:.2e} -> {'ok' if passed else 'FAILED'}", flush=True)  # fmt: skip
        if done.returncode:
            print(done.stdout[-2000:] + done.stderr[-4000:])
    print(f"runs kept in {root}")
    return 0 if ok else 2


def _history(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _worst_difference(rows: list[dict], reference: list[dict]) -> float:
    if len(rows) != len(reference):
        return float("inf")
    worst = 0.0
    for row, ref in zip(rows, reference, strict=True):
        for key in COMPARED:
            a, b = float(row[key]), float(ref[key])
            worst = max(worst, abs(a - b) / max(abs(b), 1e-8))
    return worst


if __name__ == "__main__":
    sys.exit(main())
