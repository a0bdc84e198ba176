"""Relevance scores r(d) of each direction, by hand, and their K = 2 reduction."""

import math

import pytest
import torch

from urlkit.loss import DIRECTIONS, LossInputError, relevance, url_loss

F64 = torch.float64


def test_direction_names():
    assert set(DIRECTIONS) == {"sft", "cl", "rand", "rand_cl"}


def test_sft_relevance_with_four_tokens_by_hand():
    s = [1.0, -0.5, 2.0, 0.3]  # yes, no, extra, extra
    logits = torch.tensor([[s, s]], dtype=F64)
    _, info = url_loss(logits, "sft", "sft", weight_dtype=F64)
    log_not_yes = math.log(sum(math.exp(v) for v in s[1:]))
    log_not_no = math.log(sum(math.exp(v) for i, v in enumerate(s) if i != 1))
    assert info["r_pos"].item() == pytest.approx(s[0] - log_not_yes, abs=1e-12)
    assert info["r_neg"].item() == pytest.approx(log_not_no - s[1], abs=1e-12)
    assert relevance(logits, "sft")[0, 0].item() == pytest.approx(s[0] - log_not_yes, abs=1e-12)


def test_sft_relevance_reduces_to_yes_minus_no_for_two_tokens():
    logits = 4.0 * torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    yes_minus_no = logits[..., 0] - logits[..., 1]
    for name in ("sft", "rand"):
        direction = DIRECTIONS[name]
        torch.testing.assert_close(direction.positive(logits), yes_minus_no, rtol=0, atol=1e-14)
        torch.testing.assert_close(direction.negative(logits), yes_minus_no, rtol=0, atol=1e-14)


def test_sft_relevance_is_the_log_odds_of_yes():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    p_yes = logits.softmax(-1)[..., 0]
    torch.testing.assert_close(relevance(logits, "sft"), torch.log(p_yes / (1 - p_yes)))


def test_cl_relevance_is_the_yes_logit_on_both_sides():
    logits = torch.tensor([[[1.5, 9.0, -3.0], [0.25, -2.0, 7.0]]], dtype=F64)
    _, info = url_loss(logits, "cl", "cl")
    assert info["r_pos"].tolist() == [1.5] and info["r_neg"].tolist() == [[0.25]]
    assert relevance(logits, "cl").tolist() == [[1.5, 0.25]]


def test_relevance_accepts_any_leading_shape_and_upcasts_half_precision():
    flat = torch.randn(7, 2).half()
    scores = relevance(flat, "sft")
    assert scores.shape == (7,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, flat.float()[:, 0] - flat.float()[:, 1])


def test_relevance_is_differentiable_for_ranking_losses():
    logits = torch.randn(5, 3, requires_grad=True)
    relevance(logits, "sft").sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_unknown_direction_lists_the_valid_ones():
    with pytest.raises(LossInputError, match="unknown direction 'yes'.*sft, cl, rand"):
        relevance(torch.zeros(2, 2), "yes")
    with pytest.raises(ValueError, match="unknown direction"):
        url_loss(torch.zeros(1, 2, 2), "sft", "random")


def test_info_scores_rank_every_document_with_the_positive_side_form():
    """For K > 2 r_neg is the negative-side form; info["scores"] is comparable across documents."""
    logits = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    _, info = url_loss(logits, "sft", "sft")
    torch.testing.assert_close(info["scores"], relevance(logits, "sft"))
    torch.testing.assert_close(info["scores"][:, 0], info["r_pos"])
    assert (info["scores"][:, 1:] - info["r_neg"]).abs().max() > 1e-3
