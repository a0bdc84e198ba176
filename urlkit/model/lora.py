"""LoRA adapters folded into the backbone's weights, for good or for one evaluation.

Unmerged, every adapted projection costs three matrix products (W x, A x, B A x) and a
scaled add; merged, one (W' x with W' = W + (alpha/r) B A). Scoring the embedded benchmark
on a 2-core CPU, that is ~1.2-1.25x the documents per second, in float32 and in bfloat16
(``python -m urlkit.bench``, docs/performance.md). Training needs the adapters apart, so
evaluation during training merges for the duration of the scoring and puts the original
weights back bit for bit (:func:`lora_merged`): ``unmerge`` alone would leave
``W + BA - BA``, rounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Merging rounds W + s B A to W's dtype. In float32 that is float32's rounding. In bfloat16
# the merged weight is the float32 sum rounded once (at most 2^-9 relative per weight), which
# is *closer* to the float32 model than scoring the adapters unmerged, where every adapted
# projection's bf16 output is rounded again after the adapter's product is added: on the
# default experiment's trained run, 120 test queries, |score - float32 score| max 0.14 / mean
# 0.05 merged vs 0.25 / 0.12 unmerged, and 10-20% more documents a second (docs/performance.md).
# An adapter merged *for good* (``merge_lora``, a model for export) goes through peft.
MERGEABLE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


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
    """Adapters folded into the base weights inside the block, the exact original weights
    restored after it (also on an exception). Yields how many layers were merged: 0 where
    there is nothing to merge or the layers are already merged. The merged weight is
    ``W + s B A`` summed in float32 and rounded once to W's dtype (see ``MERGEABLE_DTYPES``);
    a layer that is not one plain adapter (several active adapters, DoRA and other variants,
    a LoRA bias) is left as it is. Costs a copy of the adapted base weights."""
    layers = [layer for layer in lora_layers(module)
              if not layer.merged and layer.get_base_layer().weight.dtype in MERGEABLE_DTYPES]
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                adapter = vanilla_adapter(layer)
                if adapter is None:
                    continue
                weight = layer.get_base_layer().weight
                saved.append((layer, adapter, weight.detach().clone()))
                delta = layer.get_delta_weight(adapter).float()  # s B A (transposed for fan_in_fan_out)
                weight.copy_(weight.float() + delta)
                layer.merged_adapters.append(adapter)  # peft's forward: base layer only
        yield len(saved)
    finally:
        with torch.no_grad():
            for layer, adapter, weight in saved:
                if adapter in layer.merged_adapters:
                    layer.merged_adapters.remove(adapter)
                layer.get_base_layer().weight.copy_(weight)


# -- the mixed-precision fast path --------------------------------------------------------
def _peft_linear():
    from peft.tuners.lora.layer import Linear

    return Linear


_FUSED: dict[type, type] = {}  # peft's LoRA Linear -> its fused subclass (built once, lazily)


def fused_lora_class() -> type:
    """``peft.tuners.lora.layer.Linear`` with the fused forward below (a subclass, so peft's
    merge, unmerge, saving and ``isinstance`` checks all still apply)."""
    base = _peft_linear()
    if base not in _FUSED:
        _FUSED[base] = type("FusedLoraLinear", (base,), {
            "forward": _fused_forward, "__module__": __name__,
            "__doc__": "peft's LoRA Linear whose forward, under autocast, adds the adapter's product "
                       "into the base projection's output in one ``addmm_`` (urlkit.model.lora)."})
    return _FUSED[base]


def fuse_lora(module: torch.nn.Module) -> int:
    """Give every plain peft LoRA ``Linear`` inside ``module`` the fused forward (idempotent;
    returns how many layers it changed). Outside ``torch.autocast`` the fused forward *is*
    peft's, so this changes nothing of a float32 model."""
    base, fused, changed = _peft_linear(), fused_lora_class(), 0
    for layer in module.modules():
        if type(layer) is base:
            layer.__class__ = fused
            changed += 1
    return changed


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Under ``torch.autocast`` (bf16/fp16 frozen weights, float32 adapters: the
    ``ScoringOptions.mixed`` path), ``W x + s * B A dropout(x)`` as two products: the base
    projection, then ``out.addmm_(A dropout(x), (s B)^T)``, so the adapter's sum is accumulated
    inside the product in float32 and rounded once, with no separate scale, add or dtype copy
    over the (tokens x out) output. peft's forward computes the same thing as four kernels
    (product, scale, cast, add), which on a CPU cost up to 5x the base product itself
    (docs/performance.md). Anything else (no autocast, merged, several or disabled adapters,
    DoRA and other variants, a LoRA bias, extra arguments) runs peft's own forward, with its
    input cast off as under autocast it would only copy."""
    adapter = _plain_adapter(self, x, args, kwargs)
    if adapter is None:
        peft_forward = _peft_linear().forward
        if not torch.is_autocast_enabled(x.device.type):
            return peft_forward(self, x, *args, **kwargs)
        enabled, self.cast_input_dtype_enabled = self.cast_input_dtype_enabled, False
        try:
            return peft_forward(self, x, *args, **kwargs)
        finally:
            self.cast_input_dtype_enabled = enabled
    result = self.base_layer(x)
    hidden = self.lora_A[adapter](self.lora_dropout[adapter](x))
    update = (self.lora_B[adapter].weight * self.scaling[adapter]).t().to(result.dtype)
    result.view(-1, result.shape[-1]).addmm_(hidden.reshape(-1, hidden.shape[-1]).to(result.dtype), update)
    return result


def _plain_adapter(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The one active vanilla adapter of ``layer`` when the fused product applies, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or not torch.is_autocast_enabled(x.device.type):
        return None
    return vanilla_adapter(layer) if isinstance(layer.base_layer, torch.nn.Linear) else None


def vanilla_adapter(layer) -> str | None:
    """The one active adapter of ``layer`` when it is plain LoRA (``s B A``: no DoRA or other
    variant, no LoRA bias), else None: what the fused forward, ``lora_merged`` and
    ``urlkit.model.fused_decoder`` handle."""
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in layer.lora_variant:
        return None
    return None if layer.lora_B[active[0]].bias is not None else active[0]
