"""Per-step statistics: the weights that trained, the counterfactual ones, and accumulation."""

import pytest
import torch

from urlkit.loss import WeightOptions, compute_weight, url_loss
from urlkit.training.telemetry import StepAccumulator, step_statistics

OPTIONS = WeightOptions("sft", torch.float32)


def _batch(seed=0, b=3, n=4, k=2):
    logits = torch.randn(b, 1 + n, k, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(b, 1 + n, dtype=torch.bool)
    mask[0, -2:] = False  # the first example has only 2 real negatives
    return logits, mask


def test_counterfactual_weights_are_the_other_families_on_the_same_scores():
    logits, mask = _batch()
    loss, info = url_loss(logits, weight="sft", direction="cl", mask=mask)
    stats = step_statistics(logits, loss, info, mask, OPTIONS)
    for family in ("sft", "cl", "base"):
        w_pos, w_neg = compute_weight(family, logits, mask, weight_dtype=torch.float32)
        assert stats[f"w_{family}_pos"] == pytest.approx(w_pos.mean().item())
        assert stats[f"w_{family}_neg"] == pytest.approx(w_neg[mask[:, 1:]].mean().item())
    # the trained weight is sft, so its statistics are the sft family's
    assert stats["w_pos_mean"] == pytest.approx(stats["w_sft_pos"])
    assert stats["w_neg_mean"] == pytest.approx(stats["w_sft_neg"])
    # padded negatives are excluded from min/max (their weight is 0)
    assert stats["w_neg_min"] == pytest.approx(info["w_neg"][mask[:, 1:]].min().item())


def test_accumulation_averages_means_and_keeps_extremes():
    acc = StepAccumulator()
    rows = []
    for seed in range(3):
        logits, mask = _batch(seed)
        loss, info = url_loss(logits, weight="cl", direction="cl", mask=mask)
        row = step_statistics(logits, loss, info, mask, OPTIONS)
        acc.add(row, info, mask, [f"q{seed}"])
        rows.append(row)
    step = acc.mean()
    assert step["loss"] == pytest.approx(sum(r["loss"] for r in rows) / 3)
    assert step["w_pos_min"] == min(r["w_pos_min"] for r in rows)
    assert step["w_neg_max"] == max(r["w_neg_max"] for r in rows)
    assert step["loss"] != pytest.approx(rows[-1]["loss"])  # not just the last micro-batch
    assert acc.query_ids == ["q0", "q1", "q2"]
