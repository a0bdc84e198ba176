"""Four rewrites of a training step's operators around its products (tried in session 16, not
kept), each against the fused pass as it is, on the default experiment's model:

- ``silu_gate``: the MLP's ``silu(gate) * up`` as one autograd function whose backward writes
  both halves' gradients into one (tokens, 2 x 1536) tensor (no ``cat`` of the chunk's gradients);
- ``lora_function``: a projection with its adapter, ``x W^T + (x D^T) U^T``, as one autograd
  function: the input's two gradient products summed by one ``addmm_``, one node instead of
  ~8 (products, transposes, views, the gradients' sum);
- ``rotary_flip``: ``rotate_half`` as a flip of the two halves (its backward a flip) instead of
  a ``cat`` of two slices (whose backward fills two zero tensors);
- ``transposed_wide``: the wide products (gate|up: 576 -> 3,072) computed as ``(W x^T)^T``.

Two measures, each variant against the code as it is on the same batches, the order swapped
every other batch (this host's speed drifts within minutes):

    python docs/bench/probes/step_operators.py steps VARIANT [negatives]           # wall time a step, best of 2 a batch
    DTYPE=bfloat16 python docs/bench/probes/step_operators.py rest VARIANT [steps]  # self CPU time outside products

``rest`` (profiled) is what a machine with bf16 matrix units spends around its products, the
share that bounds its MFU; on a machine without them the products are emulated (~30 s a 1+4
step) and only that part of the profile means anything.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from _common import training

import urlkit.model.fused_decoder as fused
from urlkit.bench.training import Stepper

PRODUCTS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::addmm_", "aten::baddbmm"}


class SiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        ctx.save_for_backward(gate_up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (gate_up,) = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        out = torch.empty_like(gate_up)
        grad_gate, grad_up = out.chunk(2, dim=-1)
        torch.mul(grad, F.silu(gate), out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return out


class LoraProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat, weight, down, up):
        low = flat @ down.t()
        ctx.save_for_backward(flat, weight, down, up, low)
        return (flat @ weight.t()).addmm_(low, up.t())

    @staticmethod
    def backward(ctx, grad):
        flat, weight, down, up, low = ctx.saved_tensors
        need_x, need_w, need_d, need_u = ctx.needs_input_grad
        grad_low = grad @ up if need_x or need_d else None
        return ((grad @ weight).addmm_(grad_low, down) if need_x else None, grad.t() @ flat if need_w else None,
                grad_low.t() @ flat if need_d else None, grad.t() @ low if need_u else None)


def _layer_output_silu_gate(hidden, attended, out, gate_up, down, norm, shape):
    hidden = hidden + fused._project(attended, out)
    x = fused._rms_norm(hidden, norm, shape.eps)
    return hidden + fused._project(SiluGate.apply(fused._project(x, gate_up)), down)


_PROJECT = fused._project  # the library's, before any variant replaces it


def _project_lora_function(x, operands):
    weight, down, up = operands
    if down is None or not torch.is_grad_enabled():
        return _PROJECT(x, operands)
    out = LoraProjection.apply(x.reshape(-1, x.shape[-1]), weight, down, up)
    return out.view(*x.shape[:-1], out.shape[-1])


def _project_transposed_wide(x, operands):
    weight, down, up = operands
    flat = x.reshape(-1, x.shape[-1])
    out = (weight @ flat.t()).t() if weight.shape[0] >= 2 * weight.shape[1] else flat @ weight.t()
    if down is not None:  # the adapter added as the library adds it (its cast under an outer autocast too)
        out.addmm_(flat @ down.t(), up.t().to(out.dtype))
    return out.view(*x.shape[:-1], out.shape[-1])


def _attention_inputs_rotary_flip(hidden, cos, sin, qkv, norm, head_norms, shape):
    heads, kv_heads, head_dim = shape.heads, shape.kv_heads, shape.head_dim
    x = fused._rms_norm(hidden, norm, shape.eps)
    qk, values = fused._project(x, qkv).split([(heads + kv_heads) * head_dim, kv_heads * head_dim], dim=-1)
    qk = qk.view(-1, heads + kv_heads, head_dim)
    assert head_norms is None, "a Llama model (no per-head norms)"
    qk = qk * cos + qk.unflatten(-1, (2, head_dim // 2)).flip(-2).flatten(-2) * sin
    queries, keys = qk.split([heads, kv_heads], dim=1)
    return queries, keys, values.view(-1, kv_heads, head_dim)


# variant -> (module attribute, replacement)
VARIANTS = {"silu_gate": ("_layer_output", _layer_output_silu_gate),
            "lora_function": ("_project", _project_lora_function),
            "rotary_flip": ("_attention_inputs", _attention_inputs_rotary_flip),
            "transposed_wide": ("_project", _project_transposed_wide)}


def paired(variant: str, count: int, negatives: int, measure) -> dict[bool, list[float]]:
    """``measure(stepper, batch)`` of each of ``count`` new groups' steps, as is (False) and
    rewritten (True), in alternating order, after a step of warm-up."""
    setup = training(negatives, f"model.dtype={os.environ.get('DTYPE', 'float32')}")
    stepper = Stepper(setup.built.reranker, setup.cfg)
    name, replacement = VARIANTS[variant]
    original = getattr(fused, name)
    picked = setup.new_groups(count + 1)
    results: dict[bool, list[float]] = {False: [], True: []}
    try:
        for index, group in enumerate(picked):
            batch = setup.collate([setup.groups[group]])
            for rewritten in ((False, True) if index % 2 == 0 else (True, False)):
                setattr(fused, name, replacement if rewritten else original)
                value = measure(stepper, batch)
                if index:
                    results[rewritten].append(value)
    finally:
        setattr(fused, name, original)
    return results


def best_wall(stepper, batch, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stepper(batch)
        times.append(time.perf_counter() - start)
    return min(times)


def rest_cpu(stepper, batch) -> float:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        stepper(batch)
    events = profile.key_averages()
    return sum(e.self_cpu_time_total for e in events if e.key not in PRODUCTS) / 1e6


def main() -> None:
    mode, variant = sys.argv[1], sys.argv[2]
    if mode == "steps":
        negatives = int(sys.argv[3]) if len(sys.argv) > 3 else 4
        results = paired(variant, 40, negatives, best_wall)
        what = f"1+{negatives} steps, wall time (best of 2 a batch)"
    else:
        results = paired(variant, int(sys.argv[3]) if len(sys.argv) > 3 else 3, 4, rest_cpu)
        what = "1+4 steps, self CPU time outside products"
    ratios = [b / a for a, b in zip(results[False], results[True], strict=True)]
    print(f"{variant}, {what}, {os.environ.get('DTYPE', 'float32')} weights: as is {statistics.mean(results[False]):.4f} s, "
          f"rewritten {statistics.mean(results[True]):.4f} s; paired ratio median {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}) over {len(ratios)}", flush=True)


if __name__ == "__main__":
    main()
