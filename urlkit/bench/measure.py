"""Timing that survives a shared, noisy machine: interleaved rounds, medians, a live ceiling.

Every figure of one section is measured in *rounds*: round r times variant A, then B, then
C, ... on the same input, so a burst of load from another process slows all variants of
that round alike and the ratios between medians hold. The order rotates by one variant a
round, so no variant always runs first (right after another section or the peer's step,
which left the caches and the allocator in its own state). The matmul ceiling is measured the
same way (``Ceiling.probe`` between sections), so a model FLOP utilisation divides two
figures taken under the same load.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What to call before reading the clock: CUDA kernels run asynchronously."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved(variants: dict[str, Callable[[int], object]], rounds: int, warmup: int = 1,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each variant over ``rounds`` interleaved rounds.

    ``variants[name](r)`` runs one unit of work on input r (round r gives every variant the
    same input). ``warmup`` untimed rounds come first (lazy initialisation, allocator growth).
    Timed round r starts at the r-th variant (mod their number) and wraps around: a fixed
    order measured the first variant of every round 10-16% slower than its equal twin
    (session 9, docs/performance.md).
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(-warmup, rounds):
        shift = max(r, 0) % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            run = variants[name]
            sync()
            start = time.perf_counter()
            run(max(r, 0))
            sync()
            if r >= 0:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    """'min-max' of a list of seconds, for the table's notes."""
    return f"{min(values):.3g}-{max(values):.3g} s" if values else ""


@dataclass
class Ceiling:
    """The machine's dense matmul throughput (GFLOP/s) per dtype: the ceiling of every MFU.

    ``probe()`` times square matmuls of the largest size (up to ``max_size``) whose single
    product stays under ~0.3 s, and keeps every probe: the reported ceiling is the median of
    the probes of one run, taken between its sections.
    """

    device: torch.device
    max_size: int = 2048
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    probes: dict[torch.dtype, list[float]] = field(default_factory=dict)
    sizes: dict[torch.dtype, int] = field(default_factory=dict)
    projections: list[tuple[int, int]] = field(default_factory=list)  # the model's (in, out) matrices
    rows: tuple[int, ...] = ()  # token counts to probe them at
    shape_probes: dict[tuple[torch.dtype, int], list[float]] = field(default_factory=dict)

    def probe(self, repeats: int = 3) -> None:
        sync = synchronizer(self.device)
        for dtype in self.dtypes:
            for rows in self.rows:
                self.shape_probes.setdefault((dtype, rows), []).append(self._shape_gflops(dtype, rows, sync, repeats))
        for dtype in self.dtypes:
            size = self.sizes.get(dtype) or self._size(dtype, sync)
            a = torch.randn(size, size, device=self.device).to(dtype)
            b = torch.randn(size, size, device=self.device).to(dtype)
            a @ b
            best = float("inf")
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                for _ in range(self.launches):
                    a @ b
                sync()
                best = min(best, (time.perf_counter() - start) / self.launches)
            self.probes.setdefault(dtype, []).append(2 * size**3 / best / 1e9)

    @property
    def launches(self) -> int:
        """Products queued between two synchronisations: one on a CPU (each product runs before
        the call returns); on a GPU enough that the wait for the device is not what is timed."""
        return 1 if self.device.type == "cpu" else 20

    def _size(self, dtype: torch.dtype, sync) -> int:
        size = 256
        while size < self.max_size:
            a = torch.randn(size, size, device=self.device).to(dtype)
            a @ a
            sync()
            start = time.perf_counter()
            a @ a
            sync()
            if (time.perf_counter() - start) * 8 > 0.3:  # the next size takes 8x longer
                break
            size *= 2
        self.sizes[dtype] = size
        return size

    def _shape_gflops(self, dtype: torch.dtype, rows: int, sync, repeats: int) -> float:
        """GFLOP/s of one layer's projections at ``rows`` tokens (x @ W^T for each (in, out)):
        the matrix products the model itself runs, a limit its work can actually reach."""
        pairs = [(torch.randn(rows, k, device=self.device).to(dtype), torch.randn(n, k, device=self.device).to(dtype))
                 for k, n in self.projections]
        flops = sum(2 * rows * k * n for k, n in self.projections)
        best = float("inf")
        for _ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            for _ in range(self.launches):
                for x, w in pairs:
                    torch.nn.functional.linear(x, w)
            sync()
            best = min(best, (time.perf_counter() - start) / self.launches)
        return flops / best / 1e9

    def gflops(self, dtype: torch.dtype) -> float:
        return median(self.probes.get(dtype, []))

    def shape_gflops(self, dtype: torch.dtype, rows: int) -> float:
        """The model-shape ceiling at ``rows`` tokens (median of the probes); NaN if not probed."""
        return median(self.shape_probes.get((dtype, rows), []))

    def best_at(self, rows: int) -> tuple[torch.dtype, float]:
        """The fastest dtype at the model's shapes and ``rows`` tokens, and that ceiling."""
        return max(((d, self.shape_gflops(d, rows)) for d in self.dtypes), key=lambda pair: pair[1])

    def best(self) -> tuple[torch.dtype, float]:
        """The fastest dtype and its ceiling."""
        return max(((d, self.gflops(d)) for d in self.dtypes), key=lambda pair: pair[1])


def machine_description(device: torch.device) -> str:
    """One line: device, threads, OpenMP wait policy, torch version, load average."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name() or platform.processor() or "cpu"
        name += f", {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    return f"{device.type}: {name}; torch {torch.__version__}; load average {load_average()}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
