"""Checkpoint writes are atomic, and a checkpoint's RNG state reads back under Lightning's defaults."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from urlkit.training.checkpointing import AtomicCheckpointIO, restore_rng_state, rng_state


def test_a_writer_that_dies_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 3, "w": torch.ones(4)}, path)
    save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip archive")  # torch.save writes a zip: a torn one
        raise KeyboardInterrupt  # the process is being stopped

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 6, "w": torch.zeros(4)}, path)
    monkeypatch.setattr(torch, "save", save)
    assert io.load_checkpoint(path)["global_step"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_the_next_save_sweeps_the_torn_file_of_a_killed_writer(tmp_path):
    path = tmp_path / "last.ckpt"
    torn = tmp_path / ".last.ckpt.999999.tmp"  # what SIGKILL leaves: the cleanup never ran
    torn.write_bytes(b"PK\x03\x04 torn")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    assert not torn.exists() and torch.load(path, weights_only=True)["global_step"] == 1


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    AtomicCheckpointIO().save_checkpoint({"urlkit": {"rng": rng_state()}}, tmp_path / "last.ckpt")
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    # Lightning loads checkpoints with torch.load's default, weights_only=True
    restore_rng_state(torch.load(tmp_path / "last.ckpt", weights_only=True)["urlkit"]["rng"])
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
