"""Directions D of the Unified Reranking Loss: where each document is pushed.

Dai et al. (2025), arXiv 2510.14824, Eq. 10-13 and Algorithm 1. A direction is the gradient
of a relevance score r(d) computed from the K score columns s of one document; URL raises
r(d+) of the positive and lowers r(d-_i) of each negative.

    cl    r(d) = s_yes                                         (the InfoNCE score, Eq. 10-11)
    sft   r(d+)  = s_yes - logsumexp_{k != yes} s_k            (the SFT score, Eq. 12-13)
          r(d-_i) = logsumexp_{k != no} s_k - s_no
    rand  the sft form, on the logits of a learnable, randomly initialised projection that
          replaces the yes/no rows of the LM head (Table 3). The projection lives in the
          scoring head; the loss only sees its logits, so ``rand`` computes what ``sft``
          computes and exists so that configs and logs name what ran.
    rand_cl  the cl form on the projection's logits: r = s_0, one learned score (with the
          cl weight: InfoNCE on a learned score). :func:`resolve_direction` picks the form.

For K = 2 both sft forms are s_yes - s_no. For K > 2 they are the exact K-way cross-entropy
directions: with p = softmax(s) and q = softmax over the columns other than the label,

    d(-log p_yes)/ds = p - e_yes = -(1 - p_yes) (e_yes - q)  = -(1 - p_yes) * d r(d+)/ds
    d(-log p_no)/ds  = p - e_no  =  (1 - p_no)  (q' - e_no)  =  (1 - p_no)  * d r(d-)/ds

so URL(weight=sft, direction=sft) has exactly the gradient of the K-way SFT cross-entropy
with W+ = 1 - p_yes and W- = 1 - p_no (see :mod:`urlkit.loss.weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from urlkit.loss.inputs import NO, YES, LossInputError, check_score_columns, loss_dtype

Relevance = Callable[[torch.Tensor], torch.Tensor]
"""scores (..., K) -> relevance (...)."""


@dataclass(frozen=True)
class Direction:
    """A relevance score r(d) whose gradient is the direction URL moves a document along.

    ``positive`` is r for the positive (raised by the loss, and the ranking score),
    ``negative`` is r for a negative (lowered by the loss). They differ only for K > 2.
    """

    name: str
    positive: Relevance
    negative: Relevance


def _logsumexp_except(scores: torch.Tensor, column: int) -> torch.Tensor:
    """logsumexp over every score column but ``column``: the log-mass of the other tokens."""
    others = torch.cat([scores[..., :column], scores[..., column + 1 :]], dim=-1)
    return others.logsumexp(dim=-1)


def yes_score(scores: torch.Tensor) -> torch.Tensor:
    """r(d) = s_yes: the contrastive relevance score."""
    return scores[..., YES]


def yes_log_odds(scores: torch.Tensor) -> torch.Tensor:
    """r(d+) = s_yes - logsumexp_{k != yes} s_k = log(p_yes / (1 - p_yes)); s_yes - s_no for K = 2."""
    return scores[..., YES] - _logsumexp_except(scores, YES)


def not_no_log_odds(scores: torch.Tensor) -> torch.Tensor:
    """r(d-) = logsumexp_{k != no} s_k - s_no = log((1 - p_no) / p_no); s_yes - s_no for K = 2."""
    return _logsumexp_except(scores, NO) - scores[..., NO]


DIRECTIONS: Mapping[str, Direction] = MappingProxyType(
    {
        "sft": Direction("sft", positive=yes_log_odds, negative=not_no_log_odds),
        "cl": Direction("cl", positive=yes_score, negative=yes_score),
        "rand": Direction("rand", positive=yes_log_odds, negative=not_no_log_odds),
        "rand_cl": Direction("rand_cl", positive=yes_score, negative=yes_score),
    }
)
"""Every direction, by name."""


def resolve_direction(name: str, form: str | None = None, weight: str = "sft") -> str:
    """The loss direction of a configured direction: ``rand`` takes the form ``form``.

    ``form``: ``sft`` (``rand``), ``cl`` (``rand_cl``), ``auto`` (the weight's family: ``cl``
    for the cl weight, ``sft`` for every other) or None (configs from before the form existed,
    which trained the sft form). Other directions are returned as they are.
    """
    if name != "rand":
        return name
    form = "sft" if form is None else form
    if form == "auto":
        form = "cl" if weight == "cl" else "sft"
    if form not in ("sft", "cl"):
        raise LossInputError(f"unknown form {form!r} of the rand direction; valid: auto, sft, cl")
    return "rand" if form == "sft" else "rand_cl"


def get_direction(name: str) -> Direction:
    """The :class:`Direction` called ``name``; :class:`LossInputError` naming the valid ones."""
    if not isinstance(name, str) or name not in DIRECTIONS:
        raise LossInputError(f"unknown direction {name!r}; valid names: {', '.join(DIRECTIONS)}")
    return DIRECTIONS[name]


def relevance(logits: torch.Tensor, direction: str = "sft") -> torch.Tensor:
    """Relevance score of every document for ranking: r on the positive side.

    Args:
        logits: (..., K) score columns, column 0 "yes", column 1 "no"; any leading shape,
            e.g. (n_prompts, K) at evaluation or (B, 1+N, K) in training.
        direction: "sft" / "rand": s_yes - logsumexp_{k != yes} s_k (s_yes - s_no for K = 2);
            "cl": s_yes.

    Returns:
        (...) scores in float32 (float64 for float64 logits); higher = more relevant.
        Differentiable: it is the same function the loss raises for a positive.
    """
    chosen = get_direction(direction)
    check_score_columns(logits, caller="relevance")
    return chosen.positive(logits.to(loss_dtype(logits)))
