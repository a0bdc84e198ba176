"""The device the equivalence tests of the fused decoder run on: the CPU here and in CI;
``URLKIT_TEST_DEVICE=cuda python -m pytest tests/model/test_fused_decoder.py`` runs the same
tests (same tolerances) on a GPU, where the fast path meets other kernels (cuBLAS, SDPA's
CUDA backends)."""

from __future__ import annotations

import os

import torch

from urlkit.bench.workload import to_device

TEST_DEVICE = torch.device(os.environ.get("URLKIT_TEST_DEVICE", "cpu"))


def on_test_device(value):
    """A module, or a collated batch (nested dicts and lists of tensors), on TEST_DEVICE."""
    return value.to(TEST_DEVICE) if isinstance(value, torch.nn.Module) else to_device(value, TEST_DEVICE)
