"""The LightningModule: wires the reranker, the URL loss and per-step logging. Nothing else.

One training step, in full::

    scores = reranker(prompts)                  # (real documents, K) from the one scoring function
    logits = scatter(scores, mask)              # (B, 1+N, K), padded negatives masked out
    loss, info = url_loss(logits, weight, direction, mask)
    loss.backward(); optimizer.step()           # Lightning does these two
    log W+, W-, counterfactual W_sft/W_cl/W_base, native SFT and InfoNCE losses

Logging goes to the run directory's history.csv (always) and to the Lightning loggers
(W&B, CSV) once per optimizer step, averaged over the micro-batches of that step.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from urlkit.data.groups import scatter_scores
from urlkit.loss import url_loss
from urlkit.telemetry import StepAccumulator, step_statistics


class NonFiniteError(RuntimeError):
    """A non-finite loss, score or weight, with the step and the batch's query ids."""


class RerankerModule(L.LightningModule):
    def __init__(
        self,
        reranker: torch.nn.Module,
        weight: dict,
        direction: str,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_steps: int = 1,
        nonfinite: str = "stop",
        history=None,
        histogram_every_n_steps: int = 0,
    ):
        super().__init__()
        if nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.reranker = reranker
        self.weight = weight["name"]
        self.weight_options = {
            "weight_dtype": getattr(torch, weight.get("dtype", "float32")),
            "temperature": float(weight.get("temperature", 1.0)),
            "beta": float(weight.get("beta", 0.05)),
            "tau": float(weight.get("tau", 1e-3)),
        }
        self.direction = direction
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.nonfinite = nonfinite
        self.history = history  # urlkit.records.CsvLog or None
        self.histogram_every_n_steps = histogram_every_n_steps
        self.step_stats = StepAccumulator()
        self.skipped_steps = 0  # optimizer steps dropped by nonfinite="skip"
        self.items_consumed = 0  # training groups consumed, for exact data resume

    # -- the model ---------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        """(B, 1+N, K) score columns for a batch of training groups."""
        scores = self.reranker(batch["prompts"])
        return scatter_scores(scores, batch["mask"])

    def training_step(self, batch: dict, batch_idx: int):
        logits = self(batch)
        mask = batch["mask"]
        loss, info = url_loss(
            logits.float(), weight=self.weight, direction=self.direction, mask=mask, **self.weight_options
        )
        self.items_consumed += mask.shape[0]
        finite = bool(torch.isfinite(loss)) and all(
            bool(torch.isfinite(info[k][m]).all())
            for k, m in (("w_pos", slice(None)), ("w_neg", mask[:, 1:]))
        )
        stats = step_statistics(logits, loss, info, mask, self.weight_options)
        self.step_stats.add(stats, info, mask, batch["query_ids"])
        if not finite:
            self.step_stats.nonfinite = True
            step = self.global_step + 1
            if self.nonfinite == "stop":
                raise NonFiniteError(
                    f"non-finite loss or weight at optimizer step {step} "
                    f"(loss={loss.item()}); queries: {', '.join(batch['query_ids'])}. "
                    "Set train.nonfinite=skip to skip such steps instead."
                )
            return None  # Lightning skips backward for this micro-batch
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        if optimizer_closure is not None:
            optimizer_closure()  # the last micro-batch's forward and backward
        if self.step_stats.nonfinite or not self._gradients_finite():
            # nonfinite == "skip": drop the whole step, so nothing non-finite reaches the weights
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self._log_step(skipped=True)
            return
        optimizer.step()
        self._log_step(skipped=False)

    def _gradients_finite(self) -> bool:
        for p in self.parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                if self.nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite gradient at optimizer step {self.global_step + 1}; queries: "
                        f"{', '.join(self.step_stats.query_ids)}"
                    )
                self.step_stats.nonfinite = True
                return False
        return True

    # -- logging -----------------------------------------------------------------------
    def _log_step(self, skipped: bool) -> None:
        if not len(self.step_stats):
            return
        # global_step counts completed optimizer steps (skipped ones too); this is the next, 1-based
        step = self.global_step + 1
        row = {"step": step, **self.step_stats.mean()}
        row["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer else self.lr
        row["skipped_steps"] = self.skipped_steps
        row["items_consumed"] = self.items_consumed
        if not skipped:
            if self.history is not None:
                self.history.append(row)
            for logger in self.loggers:
                logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
            if self.histogram_every_n_steps and step % self.histogram_every_n_steps == 0:
                self._log_histograms(step)
        self.step_stats.reset()

    def _log_histograms(self, step: int) -> None:
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if type(logger).__name__ != "WandbLogger" or experiment is None:
                continue
            import wandb

            experiment.log(
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
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["urlkit"] = {
            "skipped_steps": self.skipped_steps,
            "items_consumed": self.items_consumed,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("urlkit", {})
        self.skipped_steps = state.get("skipped_steps", 0)
        self.items_consumed = state.get("items_consumed", 0)
