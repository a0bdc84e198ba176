"""What machine this is, in the terms urlkit's speed depends on: ``python -m urlkit.machine``.

    [urlkit] machine: x86_64, Intel(R) Xeon(R) Processor, 2 cores, bf16 matrix units: yes
             (amx_bf16, avx512_bf16), torch 2.13.0+cpu, 2 threads, CUDA: none

CI prints it before the tests, so that a failure can be tied to a machine kind (the project's
machines change kind: an AMD EPYC without bf16 units, an Intel Xeon with AMX).
"""

from __future__ import annotations

import os
import platform

from urlkit.hardware import BF16_CPU_FLAGS, cpu_flags, cpu_model


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
