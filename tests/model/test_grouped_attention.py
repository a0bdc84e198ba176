"""Training's explicit attention (urlkit.model.grouped_attention): banded by the keys each block
of queries reads, it computes the dense computation's outputs and gradients on every layout
prefix sharing makes (one packed row, group prefixes, rows over a cache with padding, rows of
their own openings), steps aside where nothing would be saved, computes in float32 under bf16
autocast as SDPA's math kernel does, and a training step through the fused pass scores and
trains as with dense attention and as transformers' forward."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny_reranker import scores_and_gradients, tiny_reranker

import urlkit.model.fused_decoder as fused
import urlkit.model.grouped_attention as grouped
from urlkit.data.format import Document, Query
from urlkit.model.grouped_attention import attention_plan, grouped_attention

HEADS, KV_HEADS, DIM = 6, 2, 16
PREFIX, PAD = -1, -2


def packed_row(prefix: int, continuations: list[int], groups: list[tuple[int, list[int]]] = (), padding: int = 0):
    """Segments of one packed row as prefix sharing lays it out: a prefix every token reads,
    continuations reading it and, causally, themselves; ``groups``: (group prefix length,
    its continuations), each continuation also reading its group's prefix; ``padding`` tokens."""
    segment, group = [PREFIX] * prefix, [-1] * prefix
    for length in continuations:
        segment += [len(set(segment))] * length
        group += [-1] * length
    for index, (opening, members) in enumerate(groups):
        segment += [100 + index] * opening
        group += [index] * opening
        for length in members:
            segment += [len(set(segment)) + 1000] * length
            group += [index] * length
    return segment + [PAD] * padding, group + [-1] * padding


def row_mask(segment: list[int], group: list[int]) -> torch.Tensor:
    """(width, width) boolean: what a token of the row reads (itself always)."""
    seg, grp = torch.tensor(segment), torch.tensor(group)
    width = len(segment)
    same = (seg[:, None] == seg[None, :]) & (seg[None, :] != PAD)
    group_prefix = (seg[None, :] >= 100) & (seg[None, :] < 1000) & (grp[:, None] == grp[None, :])
    reads = same | (seg[None, :] == PREFIX) | group_prefix
    return (reads & torch.ones(width, width, dtype=torch.bool).tril()) | torch.eye(width, dtype=torch.bool)


def with_past(rows: list[torch.Tensor], past: int) -> torch.Tensor:
    """(rows, 1, width, past + width): rows of equal width over ``past`` cached keys every token reads."""
    width = rows[0].shape[0]
    return torch.stack([torch.cat([torch.ones(width, past, dtype=torch.bool), row], dim=1) for row in rows])[:, None]


def attend(mask: torch.Tensor, plan, seed: int = 0):
    """Outputs and gradients of q, k, v of one grouped attention call on ``mask`` under ``plan``."""
    generator = torch.Generator().manual_seed(seed)
    rows, _, width, keys = mask.shape
    q = torch.randn(rows, HEADS, width, DIM, generator=generator, requires_grad=True)
    k, v = (torch.randn(rows, KV_HEADS, keys, DIM, generator=generator, requires_grad=True) for _ in range(2))
    out = grouped_attention(q, k, v, plan, DIM**-0.5, KV_HEADS)
    weights = torch.randn(out.shape, generator=generator)
    return out.detach(), torch.autograd.grad((out * weights).sum(), (q, k, v))


def one_row(prefix, continuations, **how):
    return row_mask(*packed_row(prefix, continuations, **how))[None, None]


LAYOUTS = {
    "1+16 one row": one_row(83, [20, 31, 45, 27, 33, 38, 22, 29, 41, 30, 26, 35, 24, 39, 28, 32, 36]),
    "group prefixes": one_row(40, [], groups=[(10, [25, 30, 22]), (6, [28, 19, 33, 24]), (3, [31, 26])]),
    "continuations before a group": one_row(21, [30, 26, 34, 29], groups=[(12, [27, 31, 25, 22, 30])]),
    "rows over a cache, padded": with_past([row_mask(*packed_row(9, [30, 25, 33, 28, 27, 31])),
                                            row_mask(*packed_row(9, [26, 31, 29, 22], padding=66))], past=30),
    # each row its own opening (an evaluation pass's folded queries) of another length
    "rows of their own openings": with_past([row_mask(*packed_row(12, [30, 25, 33, 28, 27, 31, 26])),
                                             row_mask(*packed_row(41, [26, 31, 29, 22, 30, 28], padding=5))], past=30),
}


@pytest.mark.parametrize("mask", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_banded_attention_computes_the_dense_outputs_and_gradients(mask):
    banded = attention_plan(mask, HEADS, KV_HEADS, banded=True)
    dense = attention_plan(mask, HEADS, KV_HEADS, multiple=8, banded=False)
    assert banded.banded and not dense.banded
    keys = mask.shape[-1]
    assert banded.span % 8 == 0 and banded.width % grouped.BLOCK == 0
    assert banded.span < keys, "a block reads fewer keys than the row has"
    (out, grads), (expected, expected_grads) = attend(mask, banded), attend(mask, dense)
    assert torch.allclose(out, expected, atol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert expected_grad.abs().max() > 0
        assert (grad - expected_grad).norm() / expected_grad.norm() < 1e-5


def test_the_plan_bands_where_it_saves_enough_whatever_the_mask():
    long_row = LAYOUTS["1+16 one row"]
    assert attention_plan(long_row, HEADS, KV_HEADS).banded  # ~600 keys, ~100 read a query
    # a block reads the keys its queries read: the cache, its row's or group's opening and at
    # most two continuations (a block of 32 queries spans two of ~30 tokens, at most three)
    for name, opening, longest in (("rows of their own openings", 30 + 41, 33), ("group prefixes", 40 + 10, 33)):
        plan = attention_plan(LAYOUTS[name], HEADS, KV_HEADS)
        assert plan.banded and plan.span <= opening + grouped.BLOCK + 2 * longest + 8, name
    assert not attention_plan(one_row(88, [27, 27]), HEADS, KV_HEADS).banded  # little to save
    causal = torch.ones(200, 200, dtype=torch.bool).tril()[None, None]  # one prompt: every key read
    assert not attention_plan(causal, HEADS, KV_HEADS, banded=True).banded
    ahead = long_row.clone()
    ahead[0, 0, 100, 400] = True  # a query reading a key far after its own block: gathered too
    plan = attention_plan(ahead, HEADS, KV_HEADS)
    assert plan.banded and plan.span <= attention_plan(long_row, HEADS, KV_HEADS).span + 8
    (out, _), (expected, _) = attend(ahead, plan), attend(ahead, attention_plan(ahead, HEADS, KV_HEADS, banded=False))
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("token_multiple", [1, 8])  # the products' rows rounded up: the attention sees the real ones
def test_a_training_step_through_the_banded_attention_scores_and_trains_as_dense_and_transformers(token_multiple,
                                                                                                   monkeypatch):
    reranker, renderer = tiny_reranker(["q_proj", "k_proj", "v_proj", "o_proj"], device="cpu")
    query = Query(id="q", text="which animals sleep through the winter in caves", qrels={"d0": 1})
    documents = [Document(id=f"d{i}", text=" ".join(["bears and bats hibernate", "in caves", "over winter months"][: 1 + i % 3])
                          + f" note {i}") for i in range(17)]  # a 1+16 step: one packed row
    batch = renderer.collate([renderer.encode("Find the passage.", query, d) for d in documents])
    plans = []
    plan = fused.attention_plan
    monkeypatch.setattr(fused, "attention_plan", lambda *args, **how: plans.append(plan(*args, **how)) or plans[-1])
    monkeypatch.setattr(grouped, "BANDED_SHARE", 1.0)  # the tiny prompts save little: band whatever saves a key

    banded = reranker.with_options(share_prefix=True, token_multiple=token_multiple).train()
    scores, grads = scores_and_gradients(banded, batch)
    assert plans and all(p.banded for p in plans), "the step's attention went through the band"
    plans.clear()
    for other in (banded.with_options(banded_attention=False), banded.with_options(fused_layers=False)):
        expected_scores, expected_grads = scores_and_gradients(other, batch)
        assert not any(p.banded for p in plans)
        assert torch.allclose(scores, expected_scores, atol=1e-5)
        for grad, expected in zip(grads, expected_grads, strict=True):
            assert expected.abs().max() > 0
            assert (grad - expected).norm() / expected.norm() < 1e-5


@pytest.mark.parametrize("banded", [True, False], ids=["banded", "dense"])
def test_under_bf16_autocast_the_attention_is_float32_as_sdpa_math_computes_it(banded):
    """The fused pass runs under autocast over bf16 weights; autocast would run the explicit
    products in bf16 and round the scores before the softmax (~12x SDPA's error)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask = LAYOUTS["1+16 one row"]
    plan = attention_plan(mask, HEADS, KV_HEADS, banded=banded)
    generator = torch.Generator().manual_seed(0)
    width = mask.shape[-1]
    # bf16 activations of the scale a trained model's have (scores of several units)
    q = (3 * torch.randn(1, HEADS, width, DIM, generator=generator)).bfloat16().requires_grad_()
    k, v = ((3 * torch.randn(1, KV_HEADS, width, DIM, generator=generator)).bfloat16().requires_grad_() for _ in range(2))
    weights = torch.randn(1, HEADS, width, DIM, generator=generator)

    def run(attention):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention()
        return out, torch.autograd.grad((out.float() * weights).sum(), (q, k, v))

    out, grads = run(lambda: grouped_attention(q, k, v, plan, DIM**-0.5, KV_HEADS))
    with sdpa_kernel(SDPBackend.MATH):
        expected, expected_grads = run(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=DIM**-0.5, enable_gqa=True))
    exact = torch.nn.functional.scaled_dot_product_attention(  # float32 throughout, from the same bf16 inputs
        q.float(), k.float(), v.float(), attn_mask=mask, scale=DIM**-0.5, enable_gqa=True)
    assert out.dtype == expected.dtype == torch.bfloat16
    sdpa_error = (expected.float() - exact).abs().max()
    assert (out.float() - exact).abs().max() <= 1.5 * sdpa_error  # both: the float32 result rounded once
    assert (out.float() - expected.float()).abs().max() <= 2 * sdpa_error
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert (grad.float() - expected_grad.float()).norm() / expected_grad.float().norm() < 1e-2
