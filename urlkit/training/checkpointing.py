"""Checkpoints a kill cannot break, holding everything an exact resume needs.

**Atomic writes.** :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin) writes
``last.ckpt`` as::

    write .last.ckpt.<pid>.<random>.tmp in the same folder -> flush + fsync -> os.replace -> fsync folder

``os.replace`` within one file system is atomic, so at every instant ``last.ckpt`` is either
the previous complete checkpoint or the new complete one; a process killed mid-save leaves
the previous checkpoint usable and a stray ``.tmp`` file that the next save removes.
(Lightning's own ``TorchCheckpointIO`` stages the file under the system temp folder and
moves it over, which is a copy, not a rename, when that folder is another file system, and
never fsyncs.)

**RNG state.** Lightning checkpoints the model, optimizer, scheduler and loop counters but not
the random number generators, and LoRA dropout draws from torch's global generator at every
step. :func:`rng_state` captures the python, numpy, torch (and CUDA) generators when a
checkpoint is saved; :func:`restore_rng_state` puts them back. The training module restores
them at the start of the first step after a resume (not when the checkpoint is read), so
that whatever draws random numbers while the trainer sets up (the DataLoader's base seed,
for one) cannot shift the dropout masks of the resumed steps.

Data order and negatives need no saved state: the training stream is a function of the
number of groups consumed (``urlkit.data.stream``), which the module checkpoints.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from urlkit.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is write-to-temp, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` such that a kill at any instant leaves ``path`` complete."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    # torch.save looked up at call time: the reliability tests patch it to die mid-write
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, sync_directory=True)


def rng_state() -> dict[str, Any]:
    """The state of every generator a training step may draw from, in types that
    ``torch.load(weights_only=True)`` (Lightning's default) reads back: tensors, ints, tuples."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`rng_state`; CUDA states are restored when the device count matches."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def load_trained_weights(reranker: torch.nn.Module, ckpt: Path, config_file: Path) -> None:
    """Load a training checkpoint's weights (its trainable parameters) into ``reranker``, built
    from ``config_file``; a file damaged or replaced since, or one that does not match the
    config, is an error naming it, not a traceback or parameters left untrained."""
    from urlkit.data.format import DataError

    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    try:  # written atomically, so only a file damaged or replaced later gets to the except
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same answer
        raise DataError(f"not a readable checkpoint ({type(err).__name__}: {' '.join(str(err).split())[:300]})",
                        path=ckpt) from err
    prefix = "reranker."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    extra = set(weights) - set(reranker.state_dict())
    # the checkpoint holds the trainable parameters alone: one of them absent would stay untrained
    absent = {n for n, p in reranker.named_parameters() if p.requires_grad} - set(weights)
    if extra or absent:
        raise DataError(f"does not match {config_file}: parameters it does not build "
                        f"{sorted(extra)[:5]}, trained ones it lacks {sorted(absent)[:5]}", path=ckpt)
    try:
        reranker.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a shape the config builds otherwise (lora.r, say)
        raise DataError(f"does not match {config_file}: {' '.join(str(err).split())[:300]}", path=ckpt) from err
