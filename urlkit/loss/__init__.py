"""The Unified Reranking Loss (URL) and the native losses it decomposes. Pure torch.

Dai et al. (2025), "Supervised Fine-Tuning or Contrastive Learning? Towards Better
Multimodal LLM Reranking", arXiv 2510.14824.

    loss, info = url_loss(logits, weight="base*sft", direction="cl", mask=mask)

``logits`` (B, 1+N, K): per example, document 0 the positive and 1..N negatives; column 0
"yes", column 1 "no", 2..K-1 extra tokens. See :mod:`urlkit.loss.weights` (W) and
:mod:`urlkit.loss.directions` (r) for the math.
"""

from urlkit.loss.directions import DIRECTIONS, Direction, relevance, resolve_direction
from urlkit.loss.inputs import NO, YES, LossInputError
from urlkit.loss.native import infonce_loss, sft_loss
from urlkit.loss.url import url_loss
from urlkit.loss.weights import WEIGHTS, WeightOptions, WeightParams, compute_weight, parse_weight

__all__ = [
    "DIRECTIONS",
    "NO",
    "WEIGHTS",
    "YES",
    "Direction",
    "LossInputError",
    "WeightOptions",
    "WeightParams",
    "compute_weight",
    "infonce_loss",
    "parse_weight",
    "relevance",
    "resolve_direction",
    "sft_loss",
    "url_loss",
]
