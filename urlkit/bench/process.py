"""Measurements that need a fresh process: peak memory of a training step, and step time
under a thread setting (OpenMP reads its settings once, at start-up).

    python -m urlkit.bench.process --model default --negatives 16 --chunk-size 4 [--time-steps 3]

prints one JSON line. Memory: one warm-up step (lazy initialisation, optimizer state), then
freed memory is handed back to the OS (``malloc_trim``), the peak is reset
(``/proc/self/clear_refs``), and a second step on the same batch is measured: ``live_mb``
is the resident memory before it (weights, data, optimizer state), ``peak_mb`` the
highest resident memory during it (``VmHWM``), ``step_mb`` the difference (activations and
temporaries). ``process_peak_mb`` is the whole process's peak (``VmHWM``), loading and the
warm-up step included. On CUDA,
``torch.cuda.max_memory_allocated``. ``--time-steps K`` then times K more steps.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_and_reset_peak() -> bool:
    """Hand freed heap memory back to the OS and reset VmHWM to the current RSS (Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(model: str, negatives: int, chunk_size: int | None, device: str, dtype: str | None,
            time_steps: int = 0) -> dict:
    import torch

    from urlkit.bench.training import Stepper
    from urlkit.bench.workload import build, compose_config, load_data, training_batches

    cfg = compose_config(model, f"data.n_negatives={negatives}")
    target = torch.device(device)
    built = build(cfg, target, dtype)
    data = load_data(cfg)
    (batch,) = training_batches(cfg, data, built.renderer, negatives, 1, chunk_size, device=target)
    step = Stepper(built.reranker, cfg, chunked=chunk_size is not None)
    step(batch)  # warm-up
    if target.type == "cuda":
        torch.cuda.synchronize(target)
        torch.cuda.reset_peak_memory_stats(target)
        live = torch.cuda.memory_allocated(target)
        step(batch)
        torch.cuda.synchronize(target)
        peak = torch.cuda.max_memory_allocated(target)
        result = {"live_mb": live / 2**20, "peak_mb": peak / 2**20, "step_mb": (peak - live) / 2**20,
                  "process_peak_mb": peak / 2**20, "method": "torch.cuda.max_memory_allocated"}
    else:
        # VmHWM, not ru_maxrss, for the whole process: a child's ru_maxrss starts from its
        # parent's resident size at fork (a large benchmark process would show through)
        earlier = _status_kib("VmHWM")
        exact = _release_and_reset_peak()
        live = _status_kib("VmRSS") or 0
        step(batch)
        peak = _status_kib("VmHWM") if exact else None
        process_peak = max(earlier or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak or 0)
        peak = peak or process_peak
        result = {"live_mb": live / 1024, "peak_mb": peak / 1024, "step_mb": (peak - live) / 1024,
                  "process_peak_mb": process_peak / 1024,
                  "method": "VmHWM of the 2nd step" if exact else "ru_maxrss (whole process)"}
    if time_steps:
        sync = (lambda: torch.cuda.synchronize(target)) if target.type == "cuda" else (lambda: None)
        seconds = []
        for _ in range(time_steps):
            sync()
            start = time.perf_counter()
            step(batch)
            sync()
            seconds.append(time.perf_counter() - start)
        result["step_s"] = statistics.median(seconds)
        result["threads"] = torch.get_num_threads()
    return result


def in_subprocess(model: str, negatives: int, chunk_size: int | None, device: str, dtype: str | None,
                  time_steps: int = 0, env: dict | None = None) -> dict:
    """:func:`measure` in a fresh Python process (``env``: extra environment variables)."""
    command = [sys.executable, "-m", "urlkit.bench.process", "--model", model, "--negatives", str(negatives),
               "--device", device, "--time-steps", str(time_steps)]
    if chunk_size is not None:
        command += ["--chunk-size", str(chunk_size)]
    if dtype is not None:
        command += ["--dtype", dtype]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m urlkit.bench.process", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--negatives", type=int, required=True)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--time-steps", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.negatives, args.chunk_size, args.device, args.dtype, args.time_steps)))


if __name__ == "__main__":
    main()


def default_experiment(table, device: str = "cpu") -> None:
    """``python -m urlkit.run`` with nothing changed (W&B off, its own output folder), timed end
    to end in a fresh process; its test NDCG@10 next to BM25's on the same queries, with the
    paired randomisation test of ``python -m urlkit.significance``. On a CUDA ``device`` the
    run is ``trainer=gpu`` (one GPU, bf16-mixed), the benchmark's device; otherwise the default.
    Its compile caches (inductor's, Triton's) start empty, as on a fresh machine: the benchmark's
    own compiled sections would otherwise have warmed them."""
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from urlkit.bench.measure import load_average
    from urlkit.evaluation.significance import paired_test, read_per_query

    with tempfile.TemporaryDirectory(prefix="urlkit-bench-run-") as folder:
        start = time.perf_counter()
        trainer = ["trainer=gpu"] if device.startswith("cuda") else []
        caches = {"TORCHINDUCTOR_CACHE_DIR": f"{folder}/inductor-cache", "TRITON_CACHE_DIR": f"{folder}/triton-cache"}
        done = subprocess.run([sys.executable, "-m", "urlkit.run", "logger=none", f"output_root={folder}", *trainer],
                              capture_output=True, text=True, env={**os.environ, **caches})
        seconds = time.perf_counter() - start
        label = f"python -m urlkit.run{' ' + trainer[0] if trainer else ''}, end to end, cold compile cache"
        if done.returncode != 0:
            print(done.stderr[-6000:], file=sys.stderr)  # the failure's traceback, beside the table's one line
            table.add("default experiment", label, seconds, "s", f"FAILED (exit {done.returncode}): "
                      f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
            return
        run_dir = next(Path(folder).glob("runs/*"))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        test = paired_test(*(read_per_query(str(_per_query_file(run_dir, model)), "ndcg@10") for model in ("bm25", "reranker")))
    ndcg = {key: value for key, value in metrics.items() if key.endswith("ndcg@10")}
    table.add("default experiment", label, seconds, "s",
              ", ".join(f"{key} {value:.3f}" for key, value in sorted(ndcg.items()))
              + f"; paired test vs BM25 on {test['queries']} queries: {100 * test['diff']:+.2f} NDCG@10 points, 95% CI "
              f"{100 * test['ci95_low']:+.2f} to {100 * test['ci95_high']:+.2f}, p = {test['p_value']:.3g}"
              f"; load average {load_average()}")


def _per_query_file(run_dir, model: str):
    """The run's per-query test metrics of ``model`` (``per_query/<dataset>_test_<model>.csv``)."""
    found = sorted(run_dir.glob(f"per_query/*_test_{model}.csv"))
    if not found:
        raise FileNotFoundError(f"{run_dir}/per_query/*_test_{model}.csv: the default experiment wrote no such file")
    return found[0]


def threading_rows(table, args, dtype_name: str) -> None:
    """A 1+4 training step in fresh processes: one thread, and all threads under each OpenMP
    wait policy (OpenMP reads both at start-up). On a CPU shared with other jobs, spinning
    threads wait for each other; on a dedicated one, all threads win."""
    from urlkit.bench.measure import median, spread

    cores = os.cpu_count() or 1
    settings = {"1 thread": {"OMP_NUM_THREADS": "1"},
                f"{cores} threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"},
                f"{cores} threads, OMP_WAIT_POLICY=ACTIVE": {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "ACTIVE"}}
    seconds = {name: [] for name in settings}
    for _ in range(2):
        for name, env in settings.items():
            result = in_subprocess(args.model, 4, None, args.device, dtype_name, time_steps=3, env=env)
            seconds[name].append(result["step_s"])
    for name, values in seconds.items():
        table.add("threads", f"training 1+4, {name}", 1 / median(values), "steps/s",
                  f"fresh processes, median of 3 steps, 2 alternated runs ({spread(values)})")
