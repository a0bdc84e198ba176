"""Attention in float32 with grouped query heads, as explicit matrix products: what SDPA's math
kernel computes for bf16 inputs on a CPU, in fewer kernels (the fused decoder pass's attention
in training on a CPU, ``ScoringOptions.cpu_training_attention=math``). Pure torch."""

from __future__ import annotations

import torch

__all__ = ["grouped_attention", "grouped_bias"]


def grouped_bias(mask: torch.Tensor, heads: int, kv_heads: int, multiple: int = 1) -> torch.Tensor:
    """The additive float32 mask of :func:`grouped_attention`, (rows * kv_heads, group * width,
    keys), from the boolean (rows, 1, width, keys) one, built once a pass (SDPA's math kernel
    converts a boolean mask in every layer). ``multiple``: width and keys rounded up to it,
    the extra keys masked and the extra queries reading the first key (a finite softmax, dropped)."""
    rows, _, width, keys = mask.shape
    group = heads // kv_heads
    padded_width, padded_keys = width + -width % multiple, keys + -keys % multiple
    bias = torch.full((rows, kv_heads, group, padded_width, padded_keys), float("-inf"), device=mask.device)
    bias[..., :width, :keys].masked_fill_(mask[:, :, None], 0.0)
    bias[..., width:, 0] = 0.0
    return bias.view(rows * kv_heads, group * padded_width, padded_keys)


def grouped_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                      scale: float, kv_heads: int) -> torch.Tensor:
    """``softmax(q k^T scale + bias) v`` in float32, as SDPA's math kernel computes it for bf16
    inputs on a CPU, with 7 kernels instead of its 31 (and 35 backward): each key/value head is
    read by its group of query heads as one (group * width)-row product, not repeated per head.
    (rows, heads, width, dim) queries, (rows, kv_heads, keys, dim) keys and values; ``bias``
    from :func:`grouped_bias`, whose rounded width and keys the products run at (zero rows)."""
    rows, heads, width, dim = queries.shape
    group = heads // kv_heads
    padded_width, padded_keys = bias.shape[1] // group, bias.shape[2]

    def as_float(x: torch.Tensor, length: int) -> torch.Tensor:  # one copy: cast and lay out in one kernel
        if x.shape[2] == length:
            return x.to(torch.float32, memory_format=torch.contiguous_format).contiguous()
        out = x.new_zeros(*x.shape[:2], length, dim, dtype=torch.float32)
        out[:, :, : x.shape[2]] = x
        return out

    q = as_float(queries, padded_width).view(rows * kv_heads, group * padded_width, dim)
    k = as_float(keys, padded_keys).view(rows * kv_heads, -1, dim)
    v = as_float(values, padded_keys).view(rows * kv_heads, -1, dim)
    weights = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(dim=-1)
    return torch.bmm(weights, v).view(rows, heads, padded_width, dim)[:, :, :width].to(queries.dtype)
