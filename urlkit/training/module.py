"""The LightningModule: wires the reranker, the URL loss and per-step logging. Nothing else.

One optimizer step, in full (``training_step`` runs once per micro-batch)::

    scores = reranker(prompts)                  # (real documents, K): the one scoring function
    logits = scatter(scores, mask)              # (B, 1+N, K), padded negatives masked out
    loss, info = url_loss(logits, weight, direction, mask)
    (loss / accumulate).backward()              # micro-batches add up their gradients
    every `accumulate` micro-batches: clip, optimizer.step(), scheduler.step(), zero_grad()
    log W+, W-, counterfactual W_sft/W_cl/W_base, native SFT and InfoNCE losses

Optimisation is manual (Lightning's ``automatic_optimization = False``) so that the whole
step is visible here, a non-finite step can be dropped before it touches the weights
(``urlkit.training.nonfinite``: scores, loss and weights before the backward, gradients before the
update, parameters after it), and the constant-memory step below can run its own backward.

**Constant memory in N** (``chunk_size``): URL's weights are detached, so the gradient of
the loss w.r.t. each document's logits depends only on those logits and the (constant)
weights. The step therefore scores all 1+N documents without a graph, computes the loss and
g = dloss/dlogits, then re-scores ``chunk_size`` documents at a time with a graph and
back-propagates g through each chunk. The gradient equals the one-pass gradient; activation
memory holds one chunk instead of 1+N documents. The RNG is forked around the first pass, so
dropout masks are the same in both passes.

Logging goes to the run directory's history.csv (always) and to the Lightning loggers once
per optimizer step, averaged over the micro-batches of that step.

Checkpoints hold the trainable parameters, the optimizer and scheduler (Lightning), the
number of training groups consumed (where the data stream resumes), the skipped-step count
and the RNG state (``urlkit.training.checkpointing``): a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from urlkit.data.groups import scatter_scores
from urlkit.loss import WeightOptions, url_loss
from urlkit.training.checkpointing import restore_rng_state, rng_state
from urlkit.training.nonfinite import NonFiniteError, NonFiniteGuard
from urlkit.training.telemetry import StepAccumulator, step_statistics

__all__ = ["NonFiniteError", "RerankerModule", "url_backward"]  # NonFiniteError: urlkit.training.nonfinite

def url_backward(reranker, batch: dict, loss_fn, *, scale=1.0, chunked=False, backward=None, check=None):
    """Forward and backward of one micro-batch; returns (logits, loss, info), all detached.

    ``loss_fn(logits, mask) -> (loss, info)``; gradients of ``scale * loss`` accumulate in
    the reranker's parameters. ``chunked`` runs the constant-memory step over
    ``batch["chunks"]`` (see the module docstring); the gradient is the same. ``check(logits,
    loss, info)`` may veto the backward (a non-finite step); ``backward(tensor, gradient=...)``
    defaults to autograd's (the module passes Lightning's ``manual_backward``).
    """
    backward = backward or (lambda tensor, gradient=None: tensor.backward(gradient))
    mask = batch["mask"]
    if not chunked:
        logits = scatter_scores(reranker(batch["prompts"]), mask)
        loss, info = loss_fn(logits, mask)
        if check is None or check(logits.detach(), loss, info):
            backward(loss * scale)
        return logits.detach(), loss.detach(), info
    chunks = batch["chunks"]
    devices = [scores_device(reranker)] if scores_device(reranker).type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):  # same dropout in both passes
        scores = torch.cat([reranker(chunk) for chunk in chunks])
    logits = scatter_scores(scores, mask).requires_grad_(True)
    loss, info = loss_fn(logits, mask)
    if check is None or check(logits.detach(), loss, info):
        (grad,) = torch.autograd.grad(loss * scale, logits)
        for chunk, chunk_grad in zip(chunks, grad[mask].split([len(c["input_ids"]) for c in chunks]), strict=True):
            backward(reranker(chunk), gradient=chunk_grad)
    return logits.detach(), loss.detach(), info


def scores_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


class RerankerModule(L.LightningModule):
    def __init__(
        self,
        reranker: torch.nn.Module,
        weight: WeightOptions,
        direction: str,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_steps: int = 1,
        accumulate: int = 1,
        grad_clip: float | None = 1.0,
        chunk_size: int | None = None,
        nonfinite: str = "stop",
        max_consecutive_skips: int = 20,
        history=None,
        histogram_every_n_steps: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.reranker = reranker
        self.weight_options = weight  # spec, dtype and hyper-parameters, checked when built
        self.direction = direction
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.accumulate, self.grad_clip, self.chunk_size = accumulate, grad_clip, chunk_size
        self.guard = NonFiniteGuard(nonfinite, max_consecutive_skips)
        self.history = history  # urlkit.records.CsvLog or None
        self.histogram_every_n_steps = histogram_every_n_steps
        self.step_stats = StepAccumulator()
        self.items_consumed = 0  # training groups consumed: where the data stream resumes
        self._resumed_rng = None  # RNG state of a checkpoint, restored at the next step

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps dropped by ``nonfinite="skip"`` (see urlkit.training.nonfinite)."""
        return self.guard.skipped_steps

    # -- the step ----------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        """(B, 1+N, K) score columns for a batch of training groups."""
        return scatter_scores(self.reranker(batch["prompts"]), batch["mask"])

    def training_step(self, batch: dict, batch_idx: int) -> None:
        mask = batch["mask"]
        logits, loss, info = url_backward(
            self.reranker, batch, self._url_loss, scale=1.0 / self.accumulate,
            chunked=bool(self.chunk_size), backward=self.manual_backward,
            check=lambda logits, loss, info: self._finite(logits, loss, info, batch),
        )  # fmt: skip
        self.items_consumed += mask.shape[0]
        stats = step_statistics(logits, loss, info, mask, self.weight_options)
        self.step_stats.add(stats, info, mask, batch["query_ids"])
        if len(self.step_stats) == self.accumulate:
            self._optimizer_step()

    def _url_loss(self, logits: torch.Tensor, mask: torch.Tensor):
        return url_loss(logits.float(), weight=self.weight_options, direction=self.direction, mask=mask)

    def _finite(self, logits: torch.Tensor, loss: torch.Tensor, info: dict, batch: dict) -> bool:
        """The guard's verdict on a micro-batch; a non-finite one marks its whole step skipped."""
        finite = self.guard.scores_and_loss(
            logits, loss, info, batch["mask"], step=self.global_step + 1, query_ids=batch["query_ids"]
        )
        self.step_stats.nonfinite |= not finite
        return finite

    def _optimizer_step(self) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        step, query_ids = self.global_step + 1, self.step_stats.query_ids
        skipped = self.step_stats.nonfinite or not self.guard.gradients(
            self.parameters(), step=step, query_ids=query_ids
        )
        if not skipped:  # nonfinite="skip" drops the whole step: nothing non-finite reaches the weights
            if self.grad_clip:
                self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()  # advances global_step
            scheduler.step()
            self.guard.parameters(self.named_parameters(), step=step, query_ids=query_ids)
        optimizer.zero_grad(set_to_none=True)
        self.guard.end_step(skipped, step=step, query_ids=query_ids)
        self._log_step(skipped)

    # -- logging -----------------------------------------------------------------------
    def _log_step(self, skipped: bool) -> None:
        row = {"step": self.global_step, **self.step_stats.mean()}
        row["lr"] = self.optimizers().param_groups[0]["lr"]
        row["skipped_steps"] = self.skipped_steps
        row["items_consumed"] = self.items_consumed
        if not skipped:
            if self.history is not None:
                self.history.append(row)
            for logger in self.loggers:
                logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
            if self.histogram_every_n_steps and row["step"] % self.histogram_every_n_steps == 0:
                self._log_histograms(row["step"])
        else:
            print(f"[urlkit] skipped a non-finite step ({self.skipped_steps} so far); queries: "
                  f"{', '.join(self.step_stats.query_ids)}", flush=True)  # fmt: skip
        self.step_stats.reset()

    def _log_histograms(self, step: int) -> None:
        for logger in self.loggers:
            if type(logger).__name__ != "WandbLogger":
                continue
            import wandb

            logger.experiment.log(
                {
                    "train/w_pos_hist": wandb.Histogram(torch.cat(self.step_stats.w_pos).numpy()),
                    "train/w_neg_hist": wandb.Histogram(torch.cat(self.step_stats.w_neg).numpy()),
                    "trainer/global_step": step,
                }
            )

    # -- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

        def warmup_then_cosine(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints: only what trains (LoRA + head), plus urlkit's counters -------------
    def state_dict(self, *args, **kwargs):
        full = super().state_dict(*args, **kwargs)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in full.items() if k in trainable}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # the frozen backbone comes from the model config, not from the checkpoint
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        if set(state_dict) != trainable:
            raise RuntimeError(
                "the checkpoint's trainable parameters do not match this config's: missing "
                f"{sorted(trainable - set(state_dict))[:3]}, unexpected {sorted(set(state_dict) - trainable)[:3]}"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["urlkit"] = {
            "skipped_steps": self.guard.skipped_steps,
            "items_consumed": self.items_consumed,
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("urlkit", {})
        self.guard.skipped_steps = state.get("skipped_steps", 0)
        self.items_consumed = state.get("items_consumed", 0)
        self._resumed_rng = state.get("rng")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The RNG goes back to its checkpointed state right before the first resumed step: the
        # trainer draws random numbers while it sets up (see urlkit.training.checkpointing).
        if self._resumed_rng is not None:
            restore_rng_state(self._resumed_rng)
            self._resumed_rng = None
