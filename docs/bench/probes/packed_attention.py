"""Attention of a packed evaluation pass on a CPU: SDPA's fused kernel over the whole
block-diagonal mask (what urlkit runs) against three ways of skipping the masked blocks, each
checked against it, at the shapes of the default experiment's evaluation passes (bf16, 9 query
heads over 3 key/value heads of 64; rows of packed ~25-45-token documents after a folded
15-token query, reading a 65- or 80-token shared prefix from the cache); docs/performance.md,
session 12.

* flex: ``flex_attention`` compiled (inductor's CPU template) with a block mask of 128, 64, 32;
* split: every query against the shared keys in one call and each document against itself in
  another (the fused kernel's log-sum-exp, ``_scaled_dot_product_flash_attention_for_cpu``),
  merged by their log-sum-exps; the documents gathered into a padded (documents, length) layout;
* chunks: the queries in chunks of 96 tokens, each against the keys any of its rows needs
  (gathered per row);
* urlkit's explicit attention (``urlkit.model.grouped_attention``, what training runs on a
  CPU), float32 products: dense, and banded (each block of 32 queries against the keys one of
  them reads, gathered; session 15), forced whatever share of the scores it saves.

    python docs/bench/probes/packed_attention.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from urlkit.model.grouped_attention import attention_plan, grouped_attention

HEADS, KV_HEADS, DIM, SCALE = 9, 3, 64, 0.125
GROUP = HEADS // KV_HEADS
PASSES = [(9, 297, 15, 65), (7, 212, 15, 65), (11, 127, 0, 80), (8, 87, 0, 80)]  # rows, width, folded, cached
FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def milliseconds(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def packed_layout(rows: int, width: int, folded: int) -> torch.Tensor:
    """Segment ids (rows, width): -2 the folded prefix, 0.. documents, -1 padding."""
    segment = torch.full((rows, width), -1)
    for r in range(rows):
        segment[r, :folded], column, k = -2, folded, 0
        while column + (length := int(torch.randint(25, 46, ()))) <= width:
            segment[r, column : column + length] = k
            column, k = column + length, k + 1
    return segment


def additive(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill_(~mask, float("-inf"))


def split_attention(q, k, v, segment, cached, folded):
    """Queries against the shared keys (cache + folded prefix), documents against themselves."""
    rows, _, width, _ = q.shape
    shared = cached + folded
    real = segment != -1
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    shared_mask = torch.cat([torch.ones(rows, width, cached, dtype=torch.bool),
                             (segment[:, None, :folded] == -2).expand(-1, width, -1) & causal[:, :folded]], 2)
    shared_mask |= ~real[:, :, None]  # padding queries: anything finite
    shared_bias = additive(shared_mask)[:, None].expand(rows, GROUP, width, shared).reshape(rows, 1, GROUP * width, shared)
    positions = (segment >= 0).nonzero()
    key = positions[:, 0] * 10_000 + segment[positions[:, 0], positions[:, 1]]
    _, document, lengths = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    count, longest = len(lengths), int(lengths.max())
    slot = document * longest + torch.arange(len(positions)) - (torch.cumsum(lengths, 0) - lengths)[document]
    source = positions[:, 0] * width + positions[:, 1]
    filled = torch.zeros(count * longest, dtype=torch.bool)
    filled[slot] = True
    own = (torch.ones(longest, longest, dtype=torch.bool).tril() & filled.view(count, 1, longest)) | torch.eye(longest, dtype=torch.bool)
    own_bias = additive(own)[:, None].expand(count, GROUP, longest, longest).reshape(count, 1, GROUP * longest, longest)

    def run():
        out_a, lse_a = FLASH(q.reshape(rows, KV_HEADS, GROUP * width, DIM), k[:, :, :shared], v[:, :, :shared], 0.0, False,
                             attn_mask=shared_bias, scale=SCALE)
        tokens_q = q.transpose(1, 2).reshape(rows * width, HEADS, DIM)
        tokens_k = k[:, :, cached:].transpose(1, 2).reshape(rows * width, KV_HEADS, DIM)
        tokens_v = v[:, :, cached:].transpose(1, 2).reshape(rows * width, KV_HEADS, DIM)
        gathered = [t.new_zeros(count * longest, t.shape[1], DIM) for t in (tokens_q, tokens_k, tokens_v)]
        for target, tokens in zip(gathered, (tokens_q, tokens_k, tokens_v), strict=True):
            target[slot] = tokens[source]
        qb = gathered[0].view(count, longest, KV_HEADS, GROUP, DIM).permute(0, 2, 3, 1, 4).reshape(count, KV_HEADS, -1, DIM)
        kb, vb = (t.view(count, longest, KV_HEADS, DIM).transpose(1, 2) for t in gathered[1:])
        out_b, lse_b = FLASH(qb, kb, vb, 0.0, False, attn_mask=own_bias, scale=SCALE)
        out_a = out_a.view(rows, KV_HEADS, GROUP, width, DIM).permute(0, 3, 1, 2, 4).reshape(rows * width, HEADS, DIM)
        lse_a = lse_a.view(rows, KV_HEADS, GROUP, width).permute(0, 3, 1, 2).reshape(rows * width, HEADS)[source]
        out_b = out_b.view(count, KV_HEADS, GROUP, longest, DIM).permute(0, 3, 1, 2, 4).reshape(-1, HEADS, DIM)[slot]
        lse_b = lse_b.view(count, KV_HEADS, GROUP, longest).permute(0, 3, 1, 2).reshape(-1, HEADS)[slot]
        top = torch.maximum(lse_a, lse_b)
        weight_a, weight_b = (lse_a - top).exp()[..., None], (lse_b - top).exp()[..., None]
        merged = (out_a[source].float() * weight_a + out_b.float() * weight_b) / (weight_a + weight_b)
        out = out_a.clone()
        out[source] = merged.to(out.dtype)
        return out.view(rows, width, HEADS, DIM).transpose(1, 2)

    return run


def chunked_attention(q, k, v, mask, chunk):
    chunks = []
    for start in range(0, q.shape[2], chunk):
        end = min(q.shape[2], start + chunk)
        needed = mask[:, 0, start:end].any(1)
        keys = int(needed.sum(1).max())
        order = torch.argsort((~needed).to(torch.int8), dim=1, stable=True)[:, :keys]  # needed keys first, per row
        sub = torch.gather(mask[:, 0, start:end], 2, order[:, None, :].expand(-1, end - start, -1))
        chunks.append((start, end, order[:, None, :, None].expand(-1, KV_HEADS, -1, DIM), additive(sub)[:, None]))

    def run():
        return torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k.gather(2, index), v.gather(2, index), attn_mask=bias,
                                                         scale=SCALE, enable_gqa=True) for s, e, index, bias in chunks], 2)

    return run


def probe(flex, rows: int, width: int, folded: int, cached: int) -> str:
    segment = packed_layout(rows, width, folded)
    keys = cached + width
    q = torch.randn(rows, width, HEADS, DIM, dtype=torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(rows, keys, KV_HEADS, DIM, dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    real = segment != -1
    same = (segment[:, :, None] == segment[:, None, :]) & real[:, None, :] | (segment[:, None, :] == -2)
    in_row = same & torch.ones(width, width, dtype=torch.bool).tril() | torch.eye(width, dtype=torch.bool)
    mask = torch.cat([torch.ones(rows, width, cached, dtype=torch.bool), in_row], 2)[:, None]
    bias = additive(mask)

    def dense():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=SCALE, enable_gqa=True)

    reference = dense()
    figures = [f"SDPA {milliseconds(dense):.2f} ms ({int(mask.sum()) / mask.numel():.0%} of the scores unmasked)"]
    candidates = {"split": split_attention(q, k, v, segment, cached, folded), "chunks of 96": chunked_attention(q, k, v, mask, 96)}
    for name, banded in (("urlkit dense float32", False), ("urlkit banded float32", True)):
        plan = attention_plan(mask, HEADS, KV_HEADS, banded=banded)
        candidates[name] = lambda plan=plan: grouped_attention(q, k, v, plan, SCALE, KV_HEADS)
    for block in (128, 64, 32):
        block_mask = create_block_mask(lambda b, h, i, j: mask[b, 0, i, j], rows, None, width, keys, device="cpu",
                                       BLOCK_SIZE=block, _compile=False)
        candidates[f"flex {block}"] = lambda m=block_mask: flex(q, k, v, block_mask=m, scale=SCALE, enable_gqa=True)
    for name, run in candidates.items():
        error = (run().float() - reference.float())[real[:, None].expand(-1, HEADS, -1)].abs().max().item()
        figures.append(f"{name} {milliseconds(run):.2f} (max diff {error:.3f})")
    return f"{rows} rows x {width} tokens, {cached} cached: " + "; ".join(figures)


def main() -> None:
    torch.manual_seed(0)
    flex = torch.compile(flex_attention, dynamic=False)
    for shape in PASSES:
        print(probe(flex, *shape), flush=True)


if __name__ == "__main__":
    main()
