"""The input contract of every loss function: the logits layout and its checks.

``logits`` has shape (B, 1+N, K): B examples (queries), each with 1 positive document
(index 0) and N negatives (indices 1..N); for each document, K score columns of the next
token after the prompt: column 0 is the relevant token ("yes"), column 1 the irrelevant
token ("no"), columns 2..K-1 the extra tokens of an expanded token set.

``mask`` (B, 1+N), optional, marks the real documents (True) against padded negatives
(False) of examples with fewer than N negatives. The positive is always real.
"""

from __future__ import annotations

import torch

YES = 0
"""Column of the relevant token ("yes")."""
NO = 1
"""Column of the irrelevant token ("no")."""


class LossInputError(ValueError):
    """Bad input to a ``urlkit.loss`` function: a tensor of the wrong shape or dtype, an
    unknown weight or direction name, or a hyper-parameter out of range."""


def check_logits(logits: torch.Tensor, *, caller: str) -> None:
    """Raise :class:`LossInputError` unless ``logits`` is a floating (B, 1+N, K) tensor, K >= 2."""
    if isinstance(logits, torch.Tensor) and logits.dim() != 3:
        raise LossInputError(
            f"{caller}: logits must have shape (B, 1+N, K) = (examples, documents, score "
            f"columns), got {tuple(logits.shape)} ({logits.dim()}-D)"
        )
    check_score_columns(logits, caller=caller)
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise LossInputError(
            f"{caller}: logits {tuple(logits.shape)} hold no example or no document; "
            "every example needs at least its positive"
        )


def check_score_columns(logits: torch.Tensor, *, caller: str) -> None:
    """Raise unless ``logits`` is a floating tensor whose last axis holds K >= 2 columns."""
    if not isinstance(logits, torch.Tensor):
        raise LossInputError(
            f"{caller}: logits must be a torch.Tensor, got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise LossInputError(f"{caller}: logits must be floating point, got {logits.dtype}")
    if logits.dim() == 0 or logits.shape[-1] < 2:
        raise LossInputError(
            f"{caller}: the last axis of logits must hold K >= 2 score columns "
            f"(0 = 'yes', 1 = 'no', then extra tokens), got shape {tuple(logits.shape)}"
        )


def check_mask(mask: torch.Tensor | None, logits: torch.Tensor, *, caller: str) -> torch.Tensor:
    """Return the document mask (B, 1+N) of ``logits``: ``mask`` checked, or all True if None."""
    documents = logits.shape[:2]
    if mask is None:
        return torch.ones(documents, dtype=torch.bool, device=logits.device)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise LossInputError(
            f"{caller}: mask must be a bool tensor (True = real document), got {got}; "
            "convert with mask.bool()"
        )
    if mask.shape != documents:
        raise LossInputError(
            f"{caller}: mask shape {tuple(mask.shape)} does not match the (B, 1+N) = "
            f"{tuple(documents)} documents of logits {tuple(logits.shape)}"
        )
    if mask.device != logits.device:
        raise LossInputError(f"{caller}: mask is on {mask.device}, logits on {logits.device}")
    check_positives_real(mask, caller=caller)
    return mask


def reads_back_freely(device: torch.device) -> bool:
    """Whether reading a tensor on ``device`` back to the host costs nothing more than the read:
    on the CPU it does; on an accelerator the host first waits for all the work queued on it
    (the forward pass that made the logits), one sync per loss call."""
    return device.type == "cpu"


def check_positives_real(mask: torch.Tensor, *, caller: str) -> None:
    """Raise unless every example's document 0 (its positive) is real in ``mask``.

    On the CPU the error names the examples. On an accelerator the device checks it in its own
    stream (``torch._assert_async``): the losses are called ~10 times a training step and each
    read-back would make the host wait for the step's queued work; a hidden positive then fails
    the step at its next sync, with this message but not the examples."""
    advice = "only negatives (documents 1..N) may be padded"
    if not reads_back_freely(mask.device):
        torch._assert_async(mask[:, 0].all(), f"{caller}: mask hides the positive (document 0) of an example; {advice}")
        return
    hidden = (~mask[:, 0]).nonzero().flatten().tolist()
    if hidden:
        raise LossInputError(f"{caller}: mask hides the positive (document 0) of example(s) {hidden}; {advice}")


def check_positive(value: float, *, name: str, caller: str) -> None:
    """Raise unless ``value`` > 0 (temperature, beta)."""
    if not value > 0:
        raise LossInputError(f"{caller}: {name} must be > 0, got {value!r}")


def loss_dtype(logits: torch.Tensor) -> torch.dtype:
    """The dtype losses, relevance scores and returned weights are computed in: float32,
    or float64 when the logits are float64. Half-precision logits are upcast (as the
    cross-entropy of most training code does) so that a weight is never rounded to
    half precision by the product W * r."""
    return torch.promote_types(logits.dtype, torch.float32)
