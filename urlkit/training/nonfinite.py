"""Numerical faults: a NaN or inf is caught at the step it appears, before it reaches the weights.

A half-precision weight that overflows, a degenerate prompt, or a loss computed in too low a
precision can turn one step's numbers non-finite; one such update is enough to turn every
parameter into NaN, and every later checkpoint with it. :class:`NonFiniteGuard` checks, in the
order the step computes them:

    scores      the (B, 1+N, K) logits of the real documents      each micro-batch
    loss, W     the URL loss and the detached weights W+ and W-    each micro-batch
    gradients   every trainable parameter's .grad                  before optimizer.step()
    parameters  every trainable parameter                          after optimizer.step()

The first three are flags on the device, read back once per optimizer step with the step's
telemetry and max-reduced over the ranks (the verdict names the earliest stage that failed,
and only the queries, on any rank, whose numbers were bad); the decision is taken before
``optimizer.step()``, on every rank alike.

and applies ``train.nonfinite``:

* ``stop``: raise :class:`NonFiniteError` naming the optimizer step and the batch's query
  ids (to find the offending input), before any update; the checkpoints keep the last
  finite state.
* ``skip``: drop the whole optimizer step (no update, no scheduler step; the gradients of its
  backward passes, which every rank runs so that DDP's collectives stay matched, are zeroed), count
  it (``skipped_steps``, logged with the next step and kept in checkpoints) and go on. A run
  whose steps keep failing would otherwise loop forever over an endless stream, so more
  than ``max_consecutive_skips`` skipped steps in a row stop it as ``stop`` would.

Under a loss scaler (Lightning's ``16-mixed``, float16 GPUs) the gradients are not checked: an
inf gradient there is the scaled loss overflowing float16, which the scaler answers by
skipping that update and halving its scale (the training module leaves it to the scaler).

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
    """The checks and the policy; the training module calls it at each stage of a step.

    The checks themselves (:meth:`batch_flags`, :meth:`gradient_flag`) stay on the device;
    the module reads them back with the step's telemetry, max-reduced over the ranks, so
    every rank sees the same verdict and takes the same decision (:meth:`fault`,
    :meth:`end_step`) at the same step: no rank skips or stops alone, nothing hangs in a
    collective. :meth:`scores_and_loss` and :meth:`gradients` are the eager forms (one
    batch, one process).
    """

    def __init__(self, policy: str = "stop", max_consecutive_skips: int = 20):
        if policy not in POLICIES:
            raise ValueError(
                f"train.nonfinite must be one of {', '.join(POLICIES)}, got {policy!r}"
            )
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0  # optimizer steps dropped by policy="skip", over the whole run
        self.consecutive = 0  # of which in a row, up to the current step

    # -- device-side checks ------------------------------------------------------------
    @staticmethod
    def batch_checks(logits: torch.Tensor, loss: torch.Tensor, info: dict, mask: torch.Tensor):
        """``[(what, values)]`` per stage of a micro-batch, in the order of cause and effect
        (the loss is W * r): per-query tensors (B, ...) where possible; padded slots hold
        zeros, which are finite."""
        negatives = mask[:, 1:]
        w_neg = info["w_neg"]
        if w_neg.shape == negatives.shape:
            w_neg = torch.where(negatives, w_neg, torch.zeros_like(w_neg))
        return [
            ("score", logits),
            ("weight W+", info["w_pos"]),
            ("weight W-", w_neg),
            ("loss", loss),
        ]

    def batch_flags(
        self, logits: torch.Tensor, loss: torch.Tensor, info: dict, mask: torch.Tensor
    ) -> torch.Tensor:
        """(len(STAGES) - 1,) floats, 1 where that stage of the micro-batch is non-finite (no host sync)."""
        return torch.stack(
            [
                (~torch.isfinite(v)).any().float()
                for _, v in self.batch_checks(logits, loss, info, mask)
            ]
        )

    @staticmethod
    def gradient_flag(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
        """(1,) float, 1 when some gradient is non-finite (no host sync)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return torch.zeros(1)
        return (~torch.isfinite(_sums(grads))).any().float().reshape(1)

    @classmethod
    def locate(cls, stage: str, batches: Sequence[tuple]) -> tuple[str, list[str]]:
        """``(description, bad query ids)`` of ``stage`` over ``batches`` of
        ``(logits, loss, info, mask, query_ids)`` (host syncs: only on the fault path)."""
        described, bad = [], []
        for logits, loss, info, mask, query_ids in batches:
            values = dict(cls.batch_checks(logits, loss, info, mask))[stage]
            finite = torch.isfinite(values)
            if bool(finite.all()):
                continue
            described.append(_describe(values))
            if values.dim() >= 1 and values.shape[0] == len(query_ids):
                rows = ~finite.reshape(len(query_ids), -1).all(dim=1)
                bad += [query_ids[i] for i in rows.nonzero().flatten().tolist()]
            else:
                bad += list(query_ids)
        return "; ".join(described), bad

    # -- eager forms -------------------------------------------------------------------
    def scores_and_loss(
        self,
        logits: torch.Tensor,
        loss: torch.Tensor,
        info: dict,
        mask: torch.Tensor,
        *,
        step: int,
        query_ids: Sequence[str],
    ) -> bool:
        """True when the scores of the real documents, the loss and the weights are finite.
        Otherwise ``stop`` raises and ``skip`` returns False."""
        flags = self.batch_flags(logits, loss, info, mask).tolist()
        for (what, _), flag in zip(self.batch_checks(logits, loss, info, mask), flags, strict=True):
            if flag:
                described, bad = self.locate(what, [(logits, loss, info, mask, list(query_ids))])
                return self.fault(f"{what} ({described})", step, bad)
        return True

    def gradients(
        self, parameters: Iterable[torch.nn.Parameter], *, step: int, query_ids: Sequence[str]
    ) -> bool:
        """True when every gradient is finite (same policy as :meth:`scores_and_loss`)."""
        if not bool(self.gradient_flag(parameters).item()):
            return True
        return self.fault("gradient", step, query_ids)

    # -- verdicts ----------------------------------------------------------------------
    def parameters(self, named: Iterable[tuple[str, torch.nn.Parameter]], *, step: int, query_ids: Sequence[str],
                   agree=None) -> None:  # fmt: skip
        """Raise :class:`NonFiniteError` if an update left a parameter non-finite (either policy).
        ``agree(flag) -> bool``: the verdict of all ranks (one host sync); default: this one's."""
        named = [(name, p) for name, p in named if p.requires_grad]
        if not named:
            return
        flag = (~torch.isfinite(_sums([p.detach() for _, p in named]))).any()
        if not (agree(flag) if agree is not None else bool(flag.item())):
            return
        bad = [name for name, p in named if not bool(torch.isfinite(p).all())]
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

    def fault(self, what: str, step: int, query_ids: Sequence[str]) -> bool:
        """Apply the policy to a fault: ``stop`` raises, ``skip`` returns False."""
        if self.policy == "stop":
            raise NonFiniteError(
                f"non-finite {what} at optimizer step {step}; queries: {', '.join(query_ids)}. "
                "Set train.nonfinite=skip to skip such steps instead"
            )
        return False


STAGES = ("score", "weight W+", "weight W-", "loss", "gradient")


def _describe(values: torch.Tensor) -> str:
    nan = int(torch.isnan(values).sum())
    inf = int(torch.isinf(values).sum())
    return ", ".join(
        part for part in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if part
    )


def _sums(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One float32 sum per tensor: non-finite where the tensor holds a NaN or an infinity (one
    kernel a tensor, ~10x faster than ``isfinite(...).any()`` over the 420 LoRA tensors of the
    embedded model). A finite tensor whose sum overflows float32 (entries near 1e38) counts as
    non-finite too, as its clipping norm would be infinite."""
    return torch.stack([t.sum(dtype=torch.float32) for t in tensors])

