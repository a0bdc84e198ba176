"""Attention in float32 with grouped query heads, as explicit matrix products: what SDPA's math
kernel computes for bf16 inputs on a CPU, in fewer kernels (the fused decoder pass's attention
in training on a CPU, ``ScoringOptions.cpu_training_attention=math``). Pure torch.

A training step's prompts run as one packed row: a prefix every prompt reads, then each
prompt's continuation, which reads that prefix and, causally, itself (``prefix_sharing``).
Dense, the row's attention scores every query against every key, most of them masked: at 1+16
~600 x 600 scores a head where ~600 x (80 + 32) are read. So an :class:`AttentionPlan`, made
once a pass from the mask, is *banded* where that saves enough: each block of ``BLOCK``
queries reads the prefix's keys and the ``window`` keys that end with the block (the
continuations its queries are in), gathered into one batched product, softmax and product
with the values. The numbers are the dense computation's (the masked scores weigh exactly
zero either way); only the masked work goes. Rows over a shared cache that each open with their
own tokens (several queries) take the longest row's opening into the prefix, where that reads
fewer keys a block than the prefix they all share.
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
    masked and whose queries read one key and are dropped). Banded (``window`` > 0): block
    ``b`` of ``BLOCK`` queries reads keys ``[0, prefix)`` and the ``window`` keys that end where
    the block ends (in key positions, after ``past``)."""

    width: int
    keys: int
    # dense: (rows * kv_heads, group * width, keys); banded: (rows * kv_heads * blocks,
    # group * BLOCK, prefix + window), a block's queries against the prefix's keys and its window
    bias: torch.Tensor
    prefix: int = 0
    window: int = 0
    past: int = 0

    @property
    def banded(self) -> bool:
        return self.window > 0


def attention_plan(mask: torch.Tensor, heads: int, kv_heads: int, multiple: int = 1,
                   banded: bool | None = None) -> AttentionPlan:
    """The plan of the boolean (rows, 1, width, keys) ``mask`` (True = attend; the last ``width``
    keys are the queries' own tokens). ``banded``: None = where it scores at most
    ``BANDED_SHARE`` of the dense scores, True = wherever the mask allows (causal), False = never.
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
    past, group = keys - width, heads // kv_heads
    allowed = mask[:, 0]  # (rows, width, keys)
    padded = width + -width % BLOCK
    blocks = padded // BLOCK
    ends_of_blocks = past + (torch.arange(blocks, device=mask.device) + 1) * BLOCK  # in key positions
    ends = ends_of_blocks.repeat_interleave(BLOCK)[:width]  # each query's block end
    if not bool((keys - 1 - allowed.flip(-1).long().argmax(-1) < ends).all()):  # a key after its block
        return None
    # the prefix: the keys every query at or after them reads (causally), in every row or (rows
    # of their own openings: an evaluation's folded queries) in the longest row's; any prefix
    # is exact (its product masks per query, so keys of it are read by whoever reads them, the
    # band covers each block's keys beyond it): the one with fewer keys a block is kept
    later = torch.arange(keys, device=mask.device)[None, :] > past + torch.arange(width, device=mask.device)[:, None]
    per_row = (allowed | later).all(dim=1).long().cumprod(-1).sum(-1)  # (rows,)
    rounded = {int(n) + -int(n) % 8 for n in (per_row.min(), per_row.max())}
    candidates = [(prefix, _window(allowed, prefix, ends)) for prefix in sorted(rounded) if prefix < keys]
    if not candidates:  # every key read by every later query: plain causal, nothing to band
        return None
    prefix, window = min(candidates, key=sum)
    if share is not None and (prefix + window) > share * keys:
        return None
    # prefix: (rows, blocks, BLOCK, prefix); the padding queries read their own (zero) key below
    heads_of = (rows, kv_heads, blocks, group, BLOCK)
    on_prefix = F.pad(allowed[:, :, :prefix], (0, 0, 0, padded - width)).view(rows, blocks, BLOCK, prefix)
    # band: block b's window is keys [end_b - window, end_b); keys of the prefix and after the
    # real ones are masked there (the first are read above, the others are zero rows)
    key_index = ends_of_blocks[:, None] - window + torch.arange(window, device=mask.device)[None, :]  # (blocks, window)
    valid = (key_index >= prefix) & (key_index < keys)
    gathered = F.pad(allowed, (0, 0, 0, padded - width)).view(rows, blocks, BLOCK, keys).gather(
        3, key_index.clamp(0, keys - 1)[None, :, None, :].expand(rows, -1, BLOCK, -1))
    query = torch.arange(padded, device=mask.device).view(blocks, BLOCK, 1)
    reads_itself = (query >= width) & (past + query == key_index[:, None, :])  # a zero row, dropped
    on_band = (gathered & valid[None, :, None, :]) | reads_itself[None]
    bias = _additive(torch.cat([on_prefix, on_band], dim=3))[:, None, :, None].expand(*heads_of, prefix + window)
    return AttentionPlan(padded, keys, bias.reshape(rows * kv_heads * blocks, group * BLOCK, prefix + window),
                         prefix, window, past)


def _window(allowed: torch.Tensor, prefix: int, ends: torch.Tensor) -> int:
    """Keys a block reads beyond ``prefix``, back from its end (at least a block, rounded up to 8)."""
    beyond = allowed[:, :, prefix:]
    lookback = torch.where(beyond.any(-1), ends - (beyond.long().argmax(-1) + prefix), 0)
    window = max(int(lookback.max()), BLOCK)
    return window + -window % 8


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
    would run these products in bf16 and round the scores before the softmax, ~10x the error of
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
    weights = torch.baddbmm(plan.bias, q, k.transpose(1, 2), alpha=scale).softmax(dim=-1)
    return torch.bmm(weights, v).view(rows, heads, plan.width, dim)[:, :, :width].to(queries.dtype)


def _banded_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: AttentionPlan,
                      scale: float, kv_heads: int) -> torch.Tensor:
    rows, heads, width, dim = queries.shape
    group, blocks = heads // kv_heads, plan.width // BLOCK
    prefix, window = plan.prefix, plan.window
    # queries by block: (rows * kv_heads * blocks, group * BLOCK, dim), a kv head's group together
    q = _as_float(queries, plan.width).view(rows, kv_heads, group, blocks, BLOCK, dim).transpose(2, 3)
    q = q.reshape(rows * kv_heads * blocks, group * BLOCK, dim)

    def block_keys(x: torch.Tensor) -> torch.Tensor:
        """(rows * kv_heads * blocks, prefix + window, dim): the prefix's keys, then the block's
        window (zero keys before the first and after the last), one copy."""
        x = _as_float(x, x.shape[2])
        band = F.pad(x, (0, 0, window, plan.past + plan.width - x.shape[2]))[:, :, plan.past + BLOCK:]
        band = band.unfold(2, window, BLOCK).transpose(-1, -2)  # (rows, kv_heads, blocks, window, dim), a view
        opening = x[:, :, None, :prefix].expand(-1, -1, blocks, -1, -1)
        return torch.cat([opening, band], dim=3).view(rows * kv_heads * blocks, prefix + window, dim)

    k, v = block_keys(keys), block_keys(values)
    weights = torch.baddbmm(plan.bias, q, k.transpose(1, 2), alpha=scale).softmax(dim=-1)
    out = torch.bmm(weights, v).view(rows, kv_heads, blocks, group, BLOCK, dim).transpose(2, 3)
    return out.reshape(rows, heads, plan.width, dim)[:, :, :width].to(queries.dtype)


def _as_float(x: torch.Tensor, length: int) -> torch.Tensor:
    """(rows, heads, length, dim) float32, contiguous: one copy casts and lays out (zero rows after
    ``x``'s own)."""
    if x.shape[2] == length:
        return x.to(torch.float32, memory_format=torch.contiguous_format).contiguous()
    out = x.new_zeros(*x.shape[:2], length, x.shape[3], dtype=torch.float32)
    out[:, :, : x.shape[2]] = x
    return out
