"""LoRA adapters folded into the backbone's weights, for good or for one evaluation.

Unmerged, every adapted projection costs three matrix products (W x, A x, B A x) and a
scaled add; merged, one (W' x with W' = W + (alpha/r) B A). Scoring the embedded benchmark
on a 2-core CPU, that is ~1.25x the documents per second (``python -m urlkit.bench``,
docs/performance.md). Training needs the adapters apart, so evaluation during training
merges for the duration of the scoring and puts the original weights back bit for bit
(:func:`lora_merged`): ``unmerge`` alone would leave ``W + BA - BA``, rounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Merging rounds W + BA to W's dtype: in bfloat16 (8 significant bits) an adapter's small
# update is partly lost, so scores would drift from the unmerged model's. Merge only where
# the rounding is at float32's level.
MERGEABLE_DTYPES = (torch.float32, torch.float64)


def lora_layers(module: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def merge_lora(module: torch.nn.Module) -> int:
    """Fold every LoRA adapter into its base layer for good (peft ``merge``); returns how many."""
    layers = lora_layers(module)
    for layer in layers:
        layer.merge()
    return len(layers)


@contextlib.contextmanager
def lora_merged(module: torch.nn.Module) -> Iterator[int]:
    """Adapters folded into float32 base weights inside the block, the exact original weights
    restored after it (also on an exception). Yields how many layers were merged: 0 where
    there is nothing to merge, the layers are already merged, or the base weights are
    bfloat16/float16 (see ``MERGEABLE_DTYPES``). Costs a copy of the adapted base weights."""
    layers = [layer for layer in lora_layers(module)
              if not layer.merged and layer.get_base_layer().weight.dtype in MERGEABLE_DTYPES]
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                saved.append((layer, layer.get_base_layer().weight.detach().clone()))
                layer.merge()
        yield len(layers)
    finally:
        with torch.no_grad():
            for layer, weight in saved:
                if layer.merged:
                    layer.unmerge()  # peft's bookkeeping; the copy below undoes its rounding
                layer.get_base_layer().weight.copy_(weight)
