"""The machine's matrix units, in the terms urlkit's speed depends on: which dtype the frozen
weights should have here (``model.dtype=auto``). A library module; ``python -m urlkit.machine``
prints the same facts for CI logs.
"""

from __future__ import annotations

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
    hardware has bf16 matrix units (there bf16 matmuls run faster than float32, measured by
    ``python -m urlkit.bench``: 1.7-2.6x at the model's shapes with AVX512-BF16 alone, 2.7-5x
    with AMX), float32 elsewhere (an AVX2-only CPU emulates bf16 at ~1% of
    float32's speed). LoRA adapters, the head and the loss stay float32 either way."""
    import torch

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return torch.bfloat16 if cuda_has_bf16_units() else torch.float32
    if device_type == "cpu":
        return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
    return torch.float32


def trained_weight_dtype(configured: str, recorded: str | None) -> tuple[str | None, str, str | None]:
    """(the dtype to load a trained run's frozen weights in, None: ``configured`` as it is; where
    that comes from; a note to print, or None) for evaluation, ``urlkit.rerank`` and export.

    ``model.dtype=auto`` resolves by the machine, so a run trained in bfloat16 on a machine with
    bf16 units would score in float32 on one without (small score differences): the dtype
    training chose, recorded in run.json as ``model_dtype`` (``recorded``), is the one it
    scores in anywhere, with a note where this machine has no bf16 units (emulated bf16 is
    slow: ``model.dtype=float32`` trades those last bits for speed). A run from before that
    record takes this machine's choice, and the note says so. An explicit ``model.dtype`` given
    for the evaluation is the caller's to pass instead of calling this."""
    if str(configured) != "auto":
        return None, f"model.dtype={configured}", None
    here = str(auto_weight_dtype()).removeprefix("torch.")
    if not recorded:
        return here, "this machine's model.dtype=auto (run.json records no model_dtype)", (
            f"its run.json records no model_dtype (a run from before urlkit recorded it): loading in {here}, "
            "what model.dtype=auto chooses on this machine")  # fmt: skip
    slow = None
    if recorded in ("bfloat16", "bf16") and here != "bfloat16":
        slow = (f"the run trained in {recorded} (run.json model_dtype: what model.dtype=auto chose there) and "
                f"scores in it here too, though this machine has no bf16 matrix units (emulated bf16 is slow); "
                "model.dtype=float32 is faster, its scores a little off the run's")  # fmt: skip
    return str(recorded), "run.json model_dtype (what model.dtype=auto chose in training)", slow


# model.dtype's short names -> torch's (the one table: urlkit.model.hub.DTYPES maps both to torch dtypes)
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resumed_weight_dtype(configured: str, recorded: str | None) -> tuple[str | None, str | None]:
    """(the dtype a resumed run's frozen weights continue in, None: ``configured`` as it
    resolves here; a note to print, or None), for ``resume=`` and a requeued SLURM job.

    ``model.dtype=auto`` continues in the dtype the run trained in so far (run.json
    ``model_dtype``, ``recorded``), not the one auto would choose on this machine: its adapters
    trained against those weights. An explicit ``model.dtype`` (one given to the resume) is
    taken as it is, said when it is not the recorded one."""
    if not recorded:  # a run from before the record: nothing to continue in
        return None, None
    recorded = DTYPE_NAMES.get(str(recorded), str(recorded))
    if str(configured) != "auto":
        asked = DTYPE_NAMES.get(str(configured), str(configured))
        if asked == recorded:
            return None, None
        return None, (f"model.dtype={configured}: continuing in {asked}, as asked, though the run trained in "
                      f"{recorded} so far (run.json model_dtype); it will not end as an uninterrupted run would")
    here = str(auto_weight_dtype()).removeprefix("torch.")
    if here == recorded:
        return recorded, None
    _, _, slow = trained_weight_dtype("auto", recorded)
    return recorded, (f"model.dtype=auto: continuing in {recorded}, the dtype the run trained in so far (run.json "
                      f"model_dtype), not {here}, which auto chooses on this machine"
                      + (" (no bf16 matrix units here: slow; model.dtype=float32 given to the resume trades "
                         "the run's dtype for speed, said so)" if slow else ""))  # fmt: skip


def describe_auto_dtype(dtype) -> str:
    """One line saying what ``model.dtype=auto`` chose here and why."""
    import torch

    name = str(dtype).removeprefix("torch.")
    if torch.cuda.is_available():
        return f"{name} frozen weights (CUDA {torch.cuda.get_device_name()}, bf16 tensor cores: {'yes' if cuda_has_bf16_units() else 'no'})"
    units = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags()]
    return f"{name} frozen weights (CPU bf16 matrix units: {', '.join(units) if units else 'none'})"


def can_compile(device) -> bool:
    """Whether inductor can build kernels for ``device`` here: a C++ compiler on a CPU (inductor's
    own search: ``CXX``, then g++/clang++), Triton on a GPU. Looked up once a process."""
    return _toolchain(device.type)


@cache
def _toolchain(device_type: str) -> bool:
    try:
        if device_type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
            return True
        from torch.utils._triton import has_triton

        return has_triton()
    except Exception:  # noqa: BLE001 - any failure to find a toolchain means: run eager
        return False
