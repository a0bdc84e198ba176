"""One rank of tests/training/test_clipping.py: a tiny model under FSDP (gloo, CPU), its
gradients clipped by ``urlkit.training.distributed.clip_grad_norm``; what it saw, as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from urlkit.training.distributed import clip_grad_norm


def global_norm(parameters) -> float:
    """The norm of every rank's gradient shards together."""
    squares = torch.stack([p.grad.pow(2).sum() for p in parameters if p.grad is not None]).sum().reshape(1)
    dist.all_reduce(squares)
    return float(squares.sqrt())


def rank(index: int, world: int, port: int, outs: list[str], max_norm: float) -> None:
    """Rank ``index`` of ``world`` (``torch.multiprocessing`` passes the index first); writes ``outs[index]``."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=index, world_size=world)
    try:
        torch.manual_seed(0)  # the same model on every rank; FSDP keeps a shard of it on each
        model = FullyShardedDataParallel(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)),
                                         device_id=torch.device("cpu"), use_orig_params=True)
        parameters = list(model.parameters())
        inputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(1 + index))  # each rank its own batch
        seen = {}
        for way, root in (("fsdp", model), ("torch", None)):
            model.zero_grad(set_to_none=True)
            model(inputs).sum().backward()
            before = global_norm(parameters)
            returned = float(clip_grad_norm(parameters, max_norm, root=root))
            seen[way] = {"before": before, "returned": returned, "after": global_norm(parameters)}
        Path(outs[index]).write_text(json.dumps(seen))
        dist.barrier()  # no rank tears the group down while another's last collective is in flight
    finally:
        dist.destroy_process_group()
    # what was tested is written; leave without the interpreter's teardown, where the threads
    # FSDP and gloo leave behind were seen to abort the process now and then ("terminate called
    # without an active exception", SIGABRT, 1 run in ~8 on a 2-core CPU, after the JSON)
    os._exit(0)
