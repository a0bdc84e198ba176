"""Weights W of the Unified Reranking Loss: how hard each document is pushed.

Dai et al. (2025), "Supervised Fine-Tuning or Contrastive Learning? Towards Better
Multimodal LLM Reranking", arXiv 2510.14824, Eq. 10-14 and Appendix B.

Every weight is a pair (w_pos (B,), w_neg (B, N)) computed from DETACHED scores: it scales
the update of the positive d+ and of each negative d-_i but carries no gradient itself.
Notation (per document, p = softmax over its K score columns; s = its logits):

    sft   W+ = 1 - p_yes(d+)                    W-_i = 1 - p_no(d-_i)            (Eq. 12-13)
    cl    c  = softmax_T over the real documents of s_yes / T
          W+ = 1 - c_0  (= sum_i W-_i)          W-_i = c_i                       (Eq. 10-11)
    base  W+ = 1                                W-_i = softmax over the real negatives
                                                       of p_yes(d-_i) / beta    (Eq. 14, App. B.2)
    tau   W+ = 0 if p_yes(d+) > 1 - tau else 1  W-_i = 0 if p_yes(d-_i) < tau else 1
                                                                     (a 0/1 mask, App. B.2)

For K = 2, 1 - p_no = p_yes, so the sft weight is exactly Eq. 13. For K > 2 we keep
"1 - p(label token)" (yes for the positive, no for negatives): it is the only choice that
makes URL(weight=sft, direction=sft) have exactly the gradient of the K-way cross-entropy
(see :mod:`urlkit.loss.directions`), and it stays in [0, 1].

Weights compose by elementwise product: a spec is a name, a "*"-joined string
("base*sft", Table 2 row 4) or a sequence of names. ``tau_mask`` is the named
composition base*tau (Table 2 row 2). Padded negatives are left out of every softmax over
documents and always get weight 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import torch

from urlkit.loss.inputs import (
    NO,
    YES,
    LossInputError,
    check_logits,
    check_mask,
    check_positive,
    loss_dtype,
)


@dataclass(frozen=True)
class WeightParams:
    """Hyper-parameters of the weight factors; each factor reads only its own. These are
    THE defaults of urlkit (the loss functions, :class:`WeightOptions` and, checked by a
    test, ``conf/weight_options.yaml``)."""

    temperature: float = 1.0  # cl: softmax temperature T
    beta: float = 0.05  # base: softmax temperature over the negatives (paper: 0.05)
    tau: float = 1e-3  # tau: confidence threshold of the mask (paper: 1e-3)


@dataclass(frozen=True)
class WeightOptions:
    """Everything that chooses a weight, built once and passed to :func:`url_loss`
    (``url_loss(logits, options, direction, mask)``) and :func:`compute_weight`.

    ``spec``: a weight name, a "*"-product or a sequence of names (see :data:`WEIGHTS`).
    ``dtype``: the dtype the weights are computed in; None = the wider of float32 and the
    logits' dtype (:func:`weight_dtype_for`); float16/bfloat16 = the Table 5 probe.
    ``params``: the factors' hyper-parameters (:class:`WeightParams`). Checked when built:
    a bad value raises :class:`LossInputError` at once, not at the first step.

    Example::

        options = WeightOptions.from_mapping({"name": "tau_mask", "tau": 1e-2})
        loss, info = url_loss(logits, options, "sft", mask)
    """

    spec: str | tuple[str, ...] = "sft"
    dtype: torch.dtype | None = None
    params: WeightParams = WeightParams()

    def __post_init__(self) -> None:
        _check_options(self.spec, self.dtype, self.params, "WeightOptions")

    @classmethod
    def from_mapping(cls, values: Mapping) -> WeightOptions:
        """From a mapping with the keys of ``conf/weight_options.yaml``: ``name`` (the spec),
        ``dtype`` (a torch dtype name or None), ``temperature``, ``beta``, ``tau`` (absent:
        :class:`WeightParams`' defaults). Other keys are not the weight's and are ignored."""
        dtype = values.get("dtype")
        if dtype is not None and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise LossInputError(f"weight dtype {dtype!r} is not a torch dtype name (e.g. float32, bfloat16)")
        defaults = WeightParams()
        try:
            params = WeightParams(**{key: float(values.get(key, getattr(defaults, key))) for key in _PARAM_KEYS})
        except (TypeError, ValueError) as err:
            raise LossInputError(f"weight hyper-parameters must be numbers: {err}") from err
        name = values.get("name", "sft")
        return cls(name if isinstance(name, str) else tuple(name), getattr(torch, dtype) if dtype else None, params)

    def with_spec(self, spec: str | Sequence[str]) -> WeightOptions:
        """The same dtype and hyper-parameters for another weight (counterfactual weights)."""
        return replace(self, spec=spec if isinstance(spec, str) else tuple(spec))


_PARAM_KEYS = ("temperature", "beta", "tau")


def as_weight_options(
    weight: str | Sequence[str] | WeightOptions,
    weight_dtype: torch.dtype | None = None,
    temperature: float | None = None,
    beta: float | None = None,
    tau: float | None = None,
    *,
    caller: str,
) -> WeightOptions:
    """``weight`` as :class:`WeightOptions`: a spec takes the keyword hyper-parameters (None:
    the defaults); a :class:`WeightOptions` already holds them, so none may be given too."""
    keywords = {"temperature": temperature, "beta": beta, "tau": tau}
    if isinstance(weight, WeightOptions):
        given = [name for name, value in {"weight_dtype": weight_dtype, **keywords}.items() if value is not None]
        if given:
            raise LossInputError(f"{caller}: pass {', '.join(given)} inside the WeightOptions, not beside it")
        return weight
    params = WeightParams(**{name: value for name, value in keywords.items() if value is not None})
    if not isinstance(weight, str) and isinstance(weight, Sequence):
        weight = tuple(weight)
    _check_options(weight, weight_dtype, params, caller)  # errors named after the caller
    return WeightOptions(weight, weight_dtype, params)


def _check_options(spec, dtype: torch.dtype | None, params: WeightParams, caller: str) -> None:
    parse_weight(spec)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise LossInputError(f"{caller}: weight_dtype must be a floating torch.dtype (or None), got {dtype!r}")
    _check_params(params, caller)


WeightPair = tuple[torch.Tensor, torch.Tensor]
"""(w_pos (B,), w_neg (B, N))."""
WeightFactor = Callable[[torch.Tensor, torch.Tensor, WeightParams], WeightPair]
"""(scores (B, 1+N, K) detached in weight_dtype, mask (B, 1+N), params) -> WeightPair."""


def _softmax_over_real(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Softmax along the last axis over the entries where ``real`` is True; 0 elsewhere."""
    probabilities = values.masked_fill(~real, float("-inf")).softmax(dim=-1)
    # A row without any real entry (all negatives padded) comes out NaN: it weighs nothing.
    return probabilities.masked_fill(~real, 0.0)


def sft_weight(scores: torch.Tensor, mask: torch.Tensor, params: WeightParams) -> WeightPair:
    """SFT weight (Eq. 12-13): W+ = 1 - p_yes(d+), W-_i = 1 - p_no(d-_i).

    p = softmax over the K score columns of one document. For K = 2, 1 - p_no = p_yes
    (Eq. 13 as printed); for K > 2, "1 - p(label token)" keeps URL(sft, sft) equal in
    gradient to the K-way cross-entropy.
    """
    p = scores.softmax(dim=-1)
    return 1.0 - p[:, 0, YES], 1.0 - p[:, 1:, NO]


def cl_weight(scores: torch.Tensor, mask: torch.Tensor, params: WeightParams) -> WeightPair:
    """Contrastive (InfoNCE) weight (Eq. 10-11): c = softmax over the real documents of
    s_yes / T; W+ = 1 - c_0, W-_i = c_i. Hence W+ = sum_i W-_i."""
    c = _softmax_over_real(scores[..., YES] / params.temperature, mask)
    return 1.0 - c[:, 0], c[:, 1:]


def base_weight(scores: torch.Tensor, mask: torch.Tensor, params: WeightParams) -> WeightPair:
    """Base weight (Eq. 14, Appendix B.2): W+ = 1; W-_i = softmax over the real negatives
    of p_yes(d-_i) / beta, with p = softmax over the K columns (beta = 0.05 in the paper)."""
    p_yes_negatives = scores[:, 1:].softmax(dim=-1)[..., YES]
    w_neg = _softmax_over_real(p_yes_negatives / params.beta, mask[:, 1:])
    return torch.ones_like(scores[:, 0, YES]), w_neg


def tau_factor(scores: torch.Tensor, mask: torch.Tensor, params: WeightParams) -> WeightPair:
    """Tau mask (Appendix B.2), a 0/1 factor that silences confidently solved pairs:
    W+ = 0 where p_yes(d+) > 1 - tau, W-_i = 0 where p_yes(d-_i) < tau, else 1."""
    p_yes = scores.softmax(dim=-1)[..., YES]
    keep_positive = p_yes[:, 0] <= 1.0 - params.tau
    keep_negatives = p_yes[:, 1:] >= params.tau
    return keep_positive.to(scores.dtype), keep_negatives.to(scores.dtype)


FACTORS: Mapping[str, WeightFactor] = MappingProxyType(
    {"sft": sft_weight, "cl": cl_weight, "base": base_weight, "tau": tau_factor}
)
"""The elementary weight factors, by name."""

WEIGHTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "sft": ("sft",),
        "cl": ("cl",),
        "base": ("base",),
        "tau": ("tau",),
        "tau_mask": ("base", "tau"),  # Table 2 row 2: the base weight with the tau mask
    }
)
"""Every weight name -> the factors it multiplies. Any "*"-product of these names is a weight too."""


def parse_weight(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The factor names a weight spec multiplies: ``"base*sft"`` -> ``("base", "sft")``,
    ``"tau_mask"`` -> ``("base", "tau")``, ``["tau_mask", "sft"]`` -> ``("base", "tau", "sft")``.

    Raises:
        LossInputError: the spec is empty or names an unknown weight.
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    if not all(isinstance(part, str) for part in parts):
        raise LossInputError(f"weight spec must be a string or a sequence of strings, got {spec!r}")
    names = [name.strip() for part in parts for name in part.split("*")]
    if not names or not all(names):
        raise LossInputError(f"weight spec {spec!r} has an empty factor; write e.g. 'base*sft'")
    for name in names:
        if name not in WEIGHTS:
            raise LossInputError(
                f"unknown weight {name!r} in spec {spec!r}; valid names: "
                f"{', '.join(WEIGHTS)} (combine them with '*', e.g. 'base*sft')"
            )
    return tuple(factor for name in names for factor in WEIGHTS[name])


def weight_dtype_for(logits: torch.Tensor, weight_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype weights are computed in: ``weight_dtype`` when one is asked for (a
    narrower one is the Table 5 probe), else the wider of float32 and the logits' dtype.

    Float32 is the floor because half-precision weights underflow (Table 5); the logits'
    dtype wins above it so that float64 logits give URL(sft, sft) and URL(cl, cl) exactly
    the gradients of the native losses, with nothing rounded to float32 on the way.
    """
    return loss_dtype(logits) if weight_dtype is None else weight_dtype


def _check_weight_inputs(logits, mask, weight_dtype, params: WeightParams, caller: str):
    check_logits(logits, caller=caller)
    mask = check_mask(mask, logits, caller=caller)
    if not (isinstance(weight_dtype, torch.dtype) and weight_dtype.is_floating_point):
        raise LossInputError(
            f"{caller}: weight_dtype must be a floating torch.dtype, got {weight_dtype!r}"
        )
    _check_params(params, caller)
    return mask


def _check_params(params: WeightParams, caller: str) -> None:
    check_positive(params.temperature, name="temperature", caller=caller)
    check_positive(params.beta, name="beta", caller=caller)
    if not 0.0 <= params.tau <= 1.0:
        raise LossInputError(f"{caller}: tau must be in [0, 1], got {params.tau!r}")


def compute_weight(
    weight: str | Sequence[str] | WeightOptions,
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    weight_dtype: torch.dtype | None = None,
    temperature: float | None = None,
    beta: float | None = None,
    tau: float | None = None,
) -> WeightPair:
    """The weight ``weight`` of every document, from detached scores.

    Args:
        weight: a weight name (see :data:`WEIGHTS`), a "*"-joined product ("base*sft") or a
            sequence of names; the factors multiply elementwise. Or a :class:`WeightOptions`,
            which holds the dtype and hyper-parameters (then leave the keywords out).
        logits: (B, 1+N, K) scores; document 0 the positive, column 0 "yes", column 1 "no".
        mask: optional bool (B, 1+N), False = padded negative.
        weight_dtype: dtype the weights are computed in. None (default): the wider of
            float32 and the logits' dtype (:func:`weight_dtype_for`), so float64 logits give
            float64 weights; float16 / bfloat16 reproduce the precision effect of Table 5.
        temperature: T of the cl weight. beta: temperature of the base weight.
        tau: threshold of the tau mask. None: :class:`WeightParams`' defaults.

    Returns:
        (w_pos (B,), w_neg (B, N)), without gradient, in float32 (float64 when the logits
        are float64); padded negatives weigh 0.
    """
    options = as_weight_options(weight, weight_dtype, temperature, beta, tau, caller="compute_weight")
    params = options.params
    weight_dtype = weight_dtype_for(logits, options.dtype)
    mask = _check_weight_inputs(logits, mask, weight_dtype, params, "compute_weight")
    factors = parse_weight(options.spec)
    scores = logits.detach().to(weight_dtype)
    w_pos, w_neg = FACTORS[factors[0]](scores, mask, params)
    for name in factors[1:]:
        factor_pos, factor_neg = FACTORS[name](scores, mask, params)
        w_pos, w_neg = w_pos * factor_pos, w_neg * factor_neg
    out = loss_dtype(logits)
    return w_pos.to(out), w_neg.to(out).masked_fill(~mask[:, 1:], 0.0)


def tau_masked_fraction(
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    weight_dtype: torch.dtype | None = None,
    tau: float = WeightParams.tau,
) -> torch.Tensor:
    """Fraction of the real (query, document) pairs whose weight the tau mask sets to 0."""
    params = WeightParams(tau=tau)
    weight_dtype = weight_dtype_for(logits, weight_dtype)
    mask = _check_weight_inputs(logits, mask, weight_dtype, params, "tau_masked_fraction")
    keep_positive, keep_negatives = tau_factor(logits.detach().to(weight_dtype), mask, params)
    silenced = (keep_positive == 0).sum() + ((keep_negatives == 0) & mask[:, 1:]).sum()
    return silenced.to(torch.float32) / mask.sum()
