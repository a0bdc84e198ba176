"""What machine this is, in the terms urlkit's speed depends on: ``python -m urlkit.machine``.

    [urlkit] machine: x86_64, Intel(R) Xeon(R) Processor, 2 cores, bf16 matrix units: yes
             (amx_bf16, avx512_bf16), torch 2.13.0+cpu, 2 threads, CUDA: none

CI prints it before the tests, so that a failure can be tied to a machine kind (the project's
machines change kind: an AMD EPYC without bf16 units, an Intel Xeon with AMX).
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 CPUs whose bf16 matrix products run in hardware."""


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16_units() -> bool:
    """True where the CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16)."""
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def cuda_has_bf16_units(device: int | None = None) -> bool:
    """True where a CUDA GPU multiplies bf16 matrices in its tensor cores (compute
    capability 8.0 and above: Ampere, Hopper, ...); False without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def auto_weight_dtype(device_type: str | None = None):
    """The dtype ``model.dtype=auto`` gives the frozen backbone weights on ``device_type``
    ("cuda" or "cpu"; None: CUDA where there is a GPU, else the CPU): bfloat16 where the
    hardware has bf16 matrix units (there bf16 matmuls run 2-6x faster than float32, measured
    by ``python -m urlkit.bench``), float32 elsewhere (an AVX2-only CPU emulates bf16 at ~1% of
    float32's speed). LoRA adapters, the head and the loss stay float32 either way."""
    import torch

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return torch.bfloat16 if cuda_has_bf16_units() else torch.float32
    if device_type == "cpu":
        return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
    return torch.float32


def describe_auto_dtype(dtype) -> str:
    """One line saying what ``model.dtype=auto`` chose here and why."""
    import torch

    name = str(dtype).removeprefix("torch.")
    if torch.cuda.is_available():
        return f"{name} frozen weights (CUDA {torch.cuda.get_device_name()}, bf16 tensor cores: {'yes' if cuda_has_bf16_units() else 'no'})"
    units = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags()]
    return f"{name} frozen weights (CPU bf16 matrix units: {', '.join(units) if units else 'none'})"


def describe() -> str:
    import torch

    bf16 = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags()]
    cuda = (
        ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        if torch.cuda.is_available()
        else "none"
    )
    return (
        f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, bf16 matrix units: "
        f"{'yes (' + ', '.join(bf16) + ')' if bf16 else 'no'}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CUDA: {cuda}"
    )


if __name__ == "__main__":
    print(f"[urlkit] machine: {describe()}")
