"""Several processes, one run: who this process is, and the few collectives urlkit needs.

Processes are started by Lightning (its own launcher for ``trainer.devices``/``num_nodes``,
or ``torchrun``, or SLURM, which its cluster environments detect); urlkit never launches
any. What urlkit adds on top of Lightning's DDP:

* :func:`launch_rank` / :func:`launch_layout`: the global rank (and world size) Lightning will
  give this process, known before the run directory is touched, so that only rank 0 writes
  the run's records (and a Hydra multirun of several processes is refused first);
* :func:`reduce_`, :func:`gather_rows`, :func:`gather`, :func:`agree`: thin wrappers of ``torch.distributed`` that
  are the identity in a single process (no process group), used by the step telemetry, the
  non-finite guard, the checkpoints' RNG states and the sharded evaluation;
* :func:`clip_grad_norm`: the gradients' global norm clipped across ranks also when FSDP
  shards them.

Everything here is a no-op without an initialised process group, so the single-process
paths run the same code.
"""

from __future__ import annotations

from typing import Any

import torch


def launch_rank(trainer_arguments: dict) -> int:
    """The global rank Lightning gives this process under these Trainer arguments."""
    return launch_layout(trainer_arguments)[0]


def launch_layout(trainer_arguments: dict) -> tuple[int, int]:
    """``(global rank, world size)`` of this process under these Trainer arguments.

    Lightning's accelerator connector reads its cluster environment (its own launcher's
    ``LOCAL_RANK``/``NODE_RANK``, torchrun's ``RANK``, SLURM's ``SLURM_PROCID``...) when a
    Trainer is built; a throwaway Trainer (no logger, no process group yet) asks it the same
    way the real one will, instead of a second reading of those variables here."""
    import logging

    import lightning as L

    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # its "GPU available" lines
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        quiet_arguments = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
        }
        probe = L.Trainer(**{**trainer_arguments, **quiet_arguments})
    finally:
        quiet.setLevel(level)
    return int(probe.global_rank), int(probe.world_size)


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if initialized() else 1


def reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce ``tensor`` in place over every rank (``op``: "sum", "max" or "min")."""
    if world_size() > 1:
        ops = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX,
               "min": torch.distributed.ReduceOp.MIN}  # fmt: skip
        torch.distributed.all_reduce(tensor, op=ops[op])
    return tensor


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``(world size, *tensor.shape)``: every rank's ``tensor`` in rank order, the same on every
    rank (one all-gather; ``tensor[None]`` in one process, no collective). A small vector
    gathered once gives both its sums and its maxima over the ranks, where an all-reduce needs
    one collective per operation."""
    if world_size() == 1:
        return tensor.unsqueeze(0)
    rows = [torch.empty_like(tensor) for _ in range(world_size())]
    torch.distributed.all_gather(rows, tensor.contiguous())
    return torch.stack(rows)


def gather(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in one process)."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def agree(flag: bool | torch.Tensor, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on any rank (one host sync)."""
    value = torch.as_tensor(flag, dtype=torch.float32, device=device).reshape(1)
    return bool(reduce_(value.clone(), "max").item())


def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float,
                   root: torch.nn.Module | None = None) -> torch.Tensor:
    """Scale the gradients so that their global norm is at most ``max_norm``; returns the norm
    before clipping. Under FSDP (``root``, the strategy's model, a ``FullyShardedDataParallel``)
    every rank holds a shard of each gradient: the norm is FSDP's, all-reduced over the ranks
    (torch's ``clip_grad_norm_`` would clip each shard by its own norm, which is why Lightning
    refuses norm clipping under FSDP). Elsewhere torch's (one process, or DDP, whose gradients
    are whole and alike on every rank after the all-reduce). Every rank must call it."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(root, FullyShardedDataParallel):
        return root.clip_grad_norm_(max_norm)
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
