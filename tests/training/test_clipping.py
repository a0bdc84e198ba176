"""Gradient clipping across ranks: FSDP shards every gradient, so the global norm must be
FSDP's, all-reduced (two gloo processes on this CPU; Lightning's FSDP strategy itself does
not run on a CPU, so the module's choice of clipping is tested here with FSDP directly)."""

from __future__ import annotations

import json
import socket

import pytest
import torch.multiprocessing as mp
from helpers.fsdp_clipping import rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_under_fsdp_the_global_norm_of_every_ranks_shards_is_clipped(tmp_path):
    max_norm = 1e-3
    outs = [str(tmp_path / f"rank{i}.json") for i in range(2)]
    mp.start_processes(rank, args=(2, _free_port(), outs, max_norm), nprocs=2, start_method="spawn")
    seen = [json.loads(open(out).read()) for out in outs]
    for ranks in seen:
        fsdp, plain = ranks["fsdp"], ranks["torch"]
        assert fsdp["before"] > 100 * max_norm  # clipping has work to do
        assert fsdp["returned"] == pytest.approx(fsdp["before"], rel=1e-5)  # the global norm, not a shard's
        assert fsdp["after"] == pytest.approx(max_norm, rel=1e-4)
        # torch's clip_grad_norm_ on the shards clips each rank's shard to max_norm on its own
        assert plain["after"] > 1.3 * max_norm and plain["returned"] < 0.99 * plain["before"]
    assert seen[0]["fsdp"] == seen[1]["fsdp"]  # every rank the same verdict

