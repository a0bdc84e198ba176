"""The Unified Reranking Loss (URL): any weight with any direction.

Dai et al. (2025), "Supervised Fine-Tuning or Contrastive Learning? Towards Better
Multimodal LLM Reranking", arXiv 2510.14824, Algorithm 1.

The gradients of both native objectives factor into a detached per-document WEIGHT times a
DIRECTION, the gradient of a relevance score r. URL takes the two from independent choices:

    loss = mean over examples b of [ W+_b * (-r(d+_b)) + sum_i W-_{b,i} * r(d-_{b,i}) ]

with W detached, so that

    d loss / d theta = mean_b [ -W+_b * dr(d+_b)/dtheta + sum_i W-_{b,i} * dr(d-_{b,i})/dtheta ].

URL(weight="sft", direction="sft") has exactly the gradient of :func:`sft_loss` and
URL(weight="cl", direction="cl") that of :func:`infonce_loss` (for temperature T, 1/T times
it: W_cl stays a probability and r stays the raw score). Only gradients agree: the VALUE of
URL is a surrogate, not the native loss, so log the native losses for loss curves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from urlkit.loss.directions import get_direction
from urlkit.loss.inputs import check_logits, check_mask, loss_dtype
from urlkit.loss.weights import (
    WeightOptions,
    as_weight_options,
    compute_weight,
    parse_weight,
    tau_masked_fraction,
)


def url_loss(
    logits: torch.Tensor,
    weight: str | Sequence[str] | WeightOptions = "sft",
    direction: str = "sft",
    mask: torch.Tensor | None = None,
    *,
    weight_dtype: torch.dtype | None = None,
    temperature: float | None = None,
    beta: float | None = None,
    tau: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Unified Reranking Loss (Algorithm 1) of a batch of groups.

    Args:
        logits: (B, 1+N, K) scores; document 0 of each example is the positive, 1..N its
            negatives; column 0 "yes", column 1 "no", 2..K-1 extra tokens.
        weight: weight spec: "sft", "cl", "base", "tau", "tau_mask" or a "*"-product
            ("base*sft") or a sequence of names (see :data:`urlkit.loss.WEIGHTS`); or a
            :class:`~urlkit.loss.WeightOptions` holding the spec, dtype and hyper-parameters
            (built once, e.g. from ``cfg.weight``; then leave the four keywords out).
        direction: "sft", "cl" or "rand" (see :data:`urlkit.loss.DIRECTIONS`).
        mask: optional bool (B, 1+N), False = padded negative: it gets weight 0 and is left
            out of every softmax over documents. Its logits may hold any finite value.
        weight_dtype: dtype the weights are computed in. None (default): the wider of
            float32 and the logits' dtype, so float64 logits keep the exact native
            gradients; float16/bfloat16 for the Table 5 probe. The loss itself is computed
            in float32 (float64 for float64 logits).
        temperature: T of the cl weight. beta: temperature of the base weight.
        tau: threshold of the tau mask. None: the defaults of :class:`~urlkit.loss.WeightParams`
            (1.0, 0.05, 1e-3).

    Returns:
        (loss, info): the scalar loss, differentiable w.r.t. ``logits``, and a dict of
        detached tensors: "w_pos" (B,), "w_neg" (B, N), "r_pos" (B,), "r_neg" (B, N) (padded
        negatives: weight 0, r as computed), "scores" (B, 1+N) the ranking score of every
        document (r on the positive side, :func:`urlkit.loss.relevance`; for K > 2 with
        sft/rand, r_neg is the other form and is not comparable to r_pos), "per_example"
        (B,) the bracket above, and "masked_fraction" the share of real pairs the tau mask
        silenced (0 without tau).
    """
    options = as_weight_options(weight, weight_dtype, temperature, beta, tau, caller="url_loss")
    chosen = get_direction(direction)
    check_logits(logits, caller="url_loss")
    mask = check_mask(mask, logits, caller="url_loss")
    w_pos, w_neg = compute_weight(options, logits, mask)

    scores = logits.to(loss_dtype(logits))
    r_pos = chosen.positive(scores[:, 0])  # (B,)   raised
    r_neg = chosen.negative(scores[:, 1:])  # (B, N) lowered
    # `where`, not only W = 0: a padded negative must add nothing, even through 0 * inf.
    pushed_down = torch.where(mask[:, 1:], w_neg * r_neg, 0.0).sum(dim=-1)
    per_example = -w_pos * r_pos + pushed_down
    loss = per_example.mean()

    if "tau" in parse_weight(options.spec):
        masked_fraction = tau_masked_fraction(logits, mask, weight_dtype=options.dtype, tau=options.params.tau)
    else:
        masked_fraction = torch.zeros((), device=logits.device)
    info = {
        "w_pos": w_pos,
        "w_neg": w_neg,
        "r_pos": r_pos.detach(),
        "r_neg": r_neg.detach(),
        "scores": chosen.positive(scores.detach()),
        "per_example": per_example.detach(),
        "masked_fraction": masked_fraction,
    }
    return loss, info
