"""Numerical faults: a NaN or inf is caught at the step it appears, before it reaches the weights.

A half-precision weight that overflows, a degenerate prompt, or a loss computed in too low a
precision can turn one step's numbers non-finite; one such update is enough to turn every
parameter into NaN, and every later checkpoint with it. :class:`NonFiniteGuard` checks, in the
order the step computes them:

    scores      the (B, 1+N, K) logits of the real documents      before the backward
    loss, W     the URL loss and the detached weights W+ and W-    before the backward
    gradients   every trainable parameter's .grad                  before optimizer.step()
    parameters  every trainable parameter                          after optimizer.step()

and applies ``train.nonfinite``:

* ``stop``: raise :class:`NonFiniteError` naming the optimizer step and the batch's query
  ids (to find the offending input), before any update; the checkpoints keep the last
  finite state.
* ``skip``: drop the whole optimizer step (no backward, no update, no scheduler step), count
  it (``skipped_steps``, logged with the next step and kept in checkpoints) and go on. A run
  whose steps keep failing would otherwise loop forever over an endless stream, so more
  than ``max_consecutive_skips`` skipped steps in a row stop it as ``stop`` would.

Parameters that become non-finite *after* an update (the gradient was finite but the update
overflowed, e.g. in float16) cannot be skipped any more: both policies stop, before the
checkpoint of that step is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from urlkit.errors import UrlkitError

POLICIES = ("stop", "skip")


class NonFiniteError(UrlkitError, RuntimeError):
    """A non-finite score, loss, weight, gradient or parameter, with the step and the batch's query ids."""


class NonFiniteGuard:
    """The checks and the policy; the training module calls it at each stage of a step."""

    def __init__(self, policy: str = "stop", max_consecutive_skips: int = 20):
        if policy not in POLICIES:
            raise ValueError(f"train.nonfinite must be one of {', '.join(POLICIES)}, got {policy!r}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0  # optimizer steps dropped by policy="skip", over the whole run
        self.consecutive = 0  # of which in a row, up to the current step

    def scores_and_loss(
        self, logits: torch.Tensor, loss: torch.Tensor, info: dict, mask: torch.Tensor, *, step: int, query_ids: Sequence[str]
    ) -> bool:
        """True when the scores of the real documents, the loss and the weights are finite.
        Otherwise ``stop`` raises and ``skip`` returns False (the caller drops the backward)."""
        negatives = mask[:, 1:]
        w_neg = info["w_neg"]
        checks = (  # per-query tensors (B, ...); padded slots hold zeros, which are finite
            ("score", logits),  # in the order of cause and effect: the loss is W * r
            ("weight W+", info["w_pos"]),
            ("weight W-", torch.where(negatives, w_neg, torch.zeros_like(w_neg)) if w_neg.shape == negatives.shape else w_neg),
            ("loss", loss),
        )
        for what, values in checks:
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                bad = query_ids
                if values.dim() >= 1 and values.shape[0] == len(query_ids):
                    rows = ~finite.reshape(len(query_ids), -1).all(dim=1)
                    bad = [query_ids[i] for i in rows.nonzero().flatten().tolist()]
                return self._fault(f"{what} ({_describe(values)})", step, bad)
        return True

    def gradients(self, parameters: Iterable[torch.nn.Parameter], *, step: int, query_ids: Sequence[str]) -> bool:
        """True when every gradient is finite (same policy as :meth:`scores_and_loss`)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if all(bool(torch.isfinite(g).all()) for g in grads):
            return True
        return self._fault("gradient", step, query_ids)

    def parameters(self, named: Iterable[tuple[str, torch.nn.Parameter]], *, step: int, query_ids: Sequence[str]) -> None:
        """Raise :class:`NonFiniteError` if an update left a parameter non-finite (either policy)."""
        bad = [name for name, p in named if p.requires_grad and not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteError(
                f"the update of optimizer step {step} made parameters non-finite ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); queries: {', '.join(query_ids)}. Nothing of this "
                "step was checkpointed; lower train.lr or train.grad_clip, or train the adapters in float32"
            )

    def end_step(self, skipped: bool, *, step: int, query_ids: Sequence[str]) -> None:
        """Count the step; stop after ``max_consecutive_skips`` skipped steps in a row."""
        if not skipped:
            self.consecutive = 0
            return
        self.skipped_steps += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteError(
                f"{self.consecutive} optimizer steps in a row were non-finite and skipped (up to step "
                f"{step}; last queries: {', '.join(query_ids)}): the model itself is broken, not one batch. "
                "Check model.dtype (float16 overflows easily) and train.lr"
            )

    def _fault(self, what: str, step: int, query_ids: Sequence[str]) -> bool:
        if self.policy == "stop":
            raise NonFiniteError(
                f"non-finite {what} at optimizer step {step}; queries: {', '.join(query_ids)}. "
                "Set train.nonfinite=skip to skip such steps instead"
            )
        return False


def _describe(values: torch.Tensor) -> str:
    nan = int(torch.isnan(values).sum())
    inf = int(torch.isinf(values).sum())
    return ", ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if part)
