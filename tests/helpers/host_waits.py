"""Operations that make the host wait for a CUDA device, recorded on any device (a CPU here).

On an accelerator the host waits for all queued work before it can see: a tensor made from
host data (``lift_fresh``: a copy from the host), a result whose size is data (``nonzero``,
``masked_select``, boolean indexing), a value read back (``_local_scalar_dense``: ``item``,
``bool``, ...). :class:`HostWaits` records those that lines of the given urlkit modules make, so
a test on a CPU can say that code would not stall a GPU.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_WAITS = ("aten.lift_fresh", "aten.nonzero", "aten.masked_select", "aten._local_scalar_dense")


class HostWaits(TorchDispatchMode):
    """Records the operations of ``HOST_WAITS`` (and boolean indexing) made by lines of the files
    whose path (under ``urlkit/``) starts with one of ``prefixes``, e.g. ``"training/telemetry.py"``
    or ``"loss/"``; the innermost urlkit frame decides whose operation it is."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = tuple(f"/urlkit/{prefix}" for prefix in prefixes)
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        boolean_index = name.startswith("aten.index.") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in (args[1] if len(args) > 1 else ())
        )
        if name.startswith(HOST_WAITS) or boolean_index:
            frame = next((f for f in reversed(traceback.extract_stack()) if "/urlkit/" in f.filename.replace("\\", "/")),
                         None)  # fmt: skip
            path = frame.filename.replace("\\", "/") if frame is not None else ""
            if any(prefix in path for prefix in self.prefixes):
                self.found.append(f"{name} at {path.rsplit('/urlkit/', 1)[1]}:{frame.lineno}")
        return func(*args, **(kwargs or {}))
