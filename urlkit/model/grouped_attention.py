"""Attention in float32 with grouped query heads, as explicit matrix products: what SDPA's math
kernel computes for bf16 inputs on a CPU, in fewer kernels (the fused decoder pass's attention
in training on a CPU, ``ScoringOptions.cpu_training_attention=math``). Pure torch.

A training step's prompts run as one packed row: a prefix every prompt reads, then each
prompt's continuation, which reads that prefix and, causally, itself (``prefix_sharing``;
several queries: each query's opening, then its documents' continuations).
Dense, the row's attention scores every query against every key, most of them masked: at 1+16
~600 x 600 scores a head where ~600 x (80 + 32) are read. So an :class:`AttentionPlan`, made
once a pass from the mask, is *banded* where that saves enough: each block of ``BLOCK``
consecutive queries reads only the keys one of its queries reads (the prefix, its query's
opening, the continuations it is in), gathered into one batched product, softmax and product
with the values. The numbers are the dense computation's (the masked scores weigh exactly
zero either way); only the masked work goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AttentionPlan", "attention_plan", "grouped_attention"]

BLOCK = 32  # queries of a band's block (a multiple of 8: oneDNN keeps a kernel per shape)
BANDED_SHARE = 0.75  # banded where its scores are at most this share of the dense computation's


@dataclass
class AttentionPlan:
    """A pass's attention layout and its additive float32 biases, built once a pass.

    ``width`` queries and, dense, ``keys`` keys (both rounded up: zero rows, whose keys are
    masked and whose queries read one key and are dropped). Banded (``index`` given): each
    block of ``BLOCK`` queries of a row reads ``span`` of the row's keys, gathered by ``index``:
    the keys one of its queries reads, in order, then keys none of them reads (masked)."""

    width: int
    keys: int
    # dense: (rows * kv_heads, group * width, keys); banded: (rows * kv_heads * blocks,
    # group * BLOCK, span), a block's queries against its keys
    bias: torch.Tensor
    # banded: the rows of the (rows * kv_heads * keys, dim) keys that each block reads,
    # (rows * kv_heads * blocks * span,)
    index: torch.Tensor | None = None
    span: int = 0

    @property
    def banded(self) -> bool:
        return self.index is not None


def attention_plan(mask: torch.Tensor, heads: int, kv_heads: int, multiple: int = 1,
                   banded: bool | None = None) -> AttentionPlan:
    """The plan of the boolean (rows, 1, width, keys) ``mask`` (True = attend; the last ``width``
    keys are the queries' own tokens). ``banded``: None = where it scores at most
    ``BANDED_SHARE`` of the dense scores, True = wherever a block reads fewer keys than the row
    has, False = never.
    ``multiple``: the dense width and keys rounded up to it."""
    if banded is not False:
        plan = _banded_plan(mask, heads, kv_heads, None if banded else BANDED_SHARE)
        if plan is not None:
            return plan
    rows, _, width, keys = mask.shape
    group = heads // kv_heads
    padded_width, padded_keys = width + -width % multiple, keys + -keys % multiple
    bias = torch.full((rows, kv_heads, group, padded_width, padded_keys), float("-inf"), device=mask.device)
    bias[..., :width, :keys].masked_fill_(mask[:, :, None], 0.0)
    bias[..., width:, 0] = 0.0
    return AttentionPlan(padded_width, padded_keys, bias.view(rows * kv_heads, group * padded_width, padded_keys))


def _banded_plan(mask: torch.Tensor, heads: int, kv_heads: int, share: float | None) -> AttentionPlan | None:
    rows, _, width, keys = mask.shape
    group = heads // kv_heads
    padded = width + -width % BLOCK
    blocks = padded // BLOCK
    allowed = F.pad(mask[:, 0], (0, 0, 0, padded - width)).view(rows, blocks, BLOCK, keys)  # padding queries: none
    read = allowed.any(dim=2)  # (rows, blocks, keys): the keys some query of the block reads
    span = int(read.sum(-1).max())
    span += -span % 8
    if span >= keys or (share is not None and span > share * keys):
        return None
    # each block's keys: the ones it reads first, in order (a stable sort), then others up to the span
    order = torch.argsort((~read).to(torch.uint8), dim=-1, stable=True)[..., :span]  # (rows, blocks, span)
    on = allowed.gather(3, order[:, :, None, :].expand(-1, -1, BLOCK, -1))  # (rows, blocks, BLOCK, span)
    # a padding query reads one key (its output is dropped): no softmax over nothing
    on[..., 0] |= torch.arange(padded, device=mask.device).view(blocks, BLOCK) >= width
    bias = _additive(on)[:, None, :, None].expand(rows, kv_heads, blocks, group, BLOCK, span)
    first_keys = torch.arange(rows * kv_heads, device=mask.device).view(rows, kv_heads, 1, 1) * keys
    index = (first_keys + order[:, None]).flatten()
    return AttentionPlan(padded, keys, bias.reshape(rows * kv_heads * blocks, group * BLOCK, span), index, span)


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def grouped_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: AttentionPlan,
                      scale: float, kv_heads: int) -> torch.Tensor:
    """``softmax(q k^T scale + bias) v`` in float32, as SDPA's math kernel computes it for bf16
    inputs on a CPU, with 7 kernels instead of its 31 (and 35 backward): each key/value head is
    read by its group of query heads as one (group * width)-row product, not repeated per head.
    (rows, heads, width, dim) queries, (rows, kv_heads, keys, dim) keys and values; ``plan``
    from :func:`attention_plan`, whose rounded width and keys the products run at (zero rows).
    Float32 under ``torch.autocast`` too (the fused pass over bf16 weights runs under it): autocast
    would run these products in bf16 and round the scores before the softmax, ~12x the error of
    SDPA, whose kernel autocast calls as one operator (tests/model/test_grouped_attention.py)."""
    with torch.autocast(queries.device.type, enabled=False):
        if plan.banded:
            return _banded_attention(queries, keys, values, plan, scale, kv_heads)
        return _dense_attention(queries, keys, values, plan, scale, kv_heads)


def _dense_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: AttentionPlan,
                     scale: float, kv_heads: int) -> torch.Tensor:
    rows, heads, width, dim = queries.shape
    group = heads // kv_heads
    q = _as_float(queries, plan.width).view(rows * kv_heads, group * plan.width, dim)
    k = _as_float(keys, plan.keys).view(rows * kv_heads, -1, dim)
    v = _as_float(values, plan.keys).view(rows * kv_heads, -1, dim)
    return _softmax_product(plan.bias, q, k, v, scale).view(rows, heads, plan.width, dim)[:, :, :width].to(queries.dtype)


def _banded_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: AttentionPlan,
                      scale: float, kv_heads: int) -> torch.Tensor:
    rows, heads, width, dim = queries.shape
    group, blocks = heads // kv_heads, plan.width // BLOCK
    # queries by block: (rows * kv_heads * blocks, group * BLOCK, dim), a kv head's group together
    q = _as_float(queries, plan.width).view(rows, kv_heads, group, blocks, BLOCK, dim).transpose(2, 3)
    q = q.reshape(rows * kv_heads * blocks, group * BLOCK, dim)
    # each block's keys and values, (rows * kv_heads * blocks, span, dim): one gather of rows
    k, v = (_as_float(x, x.shape[2]).view(-1, dim).index_select(0, plan.index).view(-1, plan.span, dim)
            for x in (keys, values))
    out = _softmax_product(plan.bias, q, k, v, scale).view(rows, kv_heads, blocks, group, BLOCK, dim).transpose(2, 3)
    return out.reshape(rows, heads, plan.width, dim)[:, :, :width].to(queries.dtype)


def _softmax_product(bias: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """``softmax(q k^T scale + bias) v`` over batched (batch, rows, dim) float32 operands."""
    return torch.bmm(torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(dim=-1), v)


def _as_float(x: torch.Tensor, length: int) -> torch.Tensor:
    """(rows, heads, length, dim) float32, contiguous: one copy casts and lays out (zero rows after
    ``x``'s own)."""
    if x.shape[2] == length:
        return x.to(torch.float32, memory_format=torch.contiguous_format).contiguous()
    out = x.new_zeros(*x.shape[:2], length, x.shape[3], dtype=torch.float32)
    out[:, :, : x.shape[2]] = x
    return out
