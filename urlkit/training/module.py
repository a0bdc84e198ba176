"""The LightningModule: wires the reranker, the URL loss and per-step logging. Nothing else.

One optimizer step, in full (``training_step`` runs once per micro-batch)::

    scores = reranker(prompts)                  # (real documents, K): the one scoring function
    logits = scatter(scores, mask)              # (B, 1+N, K), padded negatives masked out
    loss, info = url_loss(logits, weight, direction, mask)   # loss=native_*: sft_loss / infonce_loss
    (loss / accumulate).backward()              # micro-batches add up their gradients
    every `accumulate` micro-batches: read back telemetry + non-finite flags + pre-emption
    notices (one sync, all ranks), optimizer.step() (clipping inside it, after any loss scaler
    has unscaled the gradients), check the parameters (the step's second sync), scheduler.step(),
    zero_grad()
    log W+, W-, counterfactual W_sft/W_cl/W_base, native SFT and InfoNCE losses

Optimisation is manual (Lightning's ``automatic_optimization = False``) so that the whole
step is visible here, a non-finite step can be dropped before it touches the weights
(``urlkit.training.nonfinite``: scores, loss and weights of every micro-batch and the
gradients, decided before the update on every rank alike; parameters after it; with a loss
scaler, 16-mixed, an inf gradient is the scaler's overflow signal, not a fault), and the
constant-memory step below can run its own backward.

**Constant memory in N** (``chunk_size``): URL's weights are detached, so the gradient of
the loss w.r.t. each document's logits depends only on those logits and the (constant)
weights. The step therefore scores all 1+N documents without a graph, computes the loss and
g = dloss/dlogits, then re-scores ``chunk_size`` documents at a time with a graph and
back-propagates g through each chunk. The gradient equals the one-pass gradient; activation
memory holds one chunk instead of 1+N documents. The RNG is forked around the first pass, so
dropout masks are the same in both passes.

Logging goes to the run directory's history.csv and to the Lightning loggers every
``log_every_n_steps`` optimizer steps (``log.every_n_steps``), one row describing all the
micro-batches of that step on all ranks (``urlkit.training.telemetry``: sums kept on the
device, reduced over the ranks and read back once per step).

**Data parallel** (``trainer=ddp``, Lightning's DDP): each rank scores its own share of the
step's queries (``urlkit.data.stream.RankShard``); backward passes add up locally under
``no_sync`` and the gradients are all-reduced (averaged) once per optimizer step, in the last
backward pass of the last micro-batch, so R ranks x B queries take the step of one process
with R x B queries. ``items_consumed`` counts the groups of all ranks.

Checkpoints hold the trainable parameters, the optimizer and scheduler (Lightning), the
number of training groups consumed (where the data stream resumes), the skipped-step count
and the RNG state (``urlkit.training.checkpointing``): a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import lightning as L
import torch

from urlkit.data.groups import scatter_scores
from urlkit.loss import WeightOptions, infonce_loss, sft_loss, url_loss
from urlkit.training import distributed
from urlkit.training.checkpointing import restore_rng_state, rng_state
from urlkit.training.nonfinite import STAGES, NonFiniteError, NonFiniteGuard
from urlkit.training.telemetry import StepAccumulator

__all__ = ["NonFiniteError", "RerankerModule", "adamw", "url_backward"]  # NonFiniteError: urlkit.training.nonfinite


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0, fused: bool = True) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters) on CPU and CUDA unless ``fused=False``: the
    same update as the multi-tensor one up to float rounding, 45 -> 7 ms a step for the embedded
    model's 420 LoRA tensors on a 2-core CPU (docs/performance.md)."""
    fused = fused and bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def url_backward(reranker, batch: dict, loss_fn, *, scale=1.0, chunked=False, backward=None, check=None, no_sync=None):
    """Forward and backward of one micro-batch; returns (logits, loss, info), all detached.

    ``loss_fn(logits, mask) -> (loss, info)``; gradients of ``scale * loss`` accumulate in
    the reranker's parameters. ``chunked`` runs the constant-memory step over
    ``batch["chunks"]`` (see the module docstring); the gradient is the same. ``check(logits,
    loss, info)`` may veto the backward (a non-finite step); ``backward(tensor, gradient=...)``
    defaults to autograd's (the module passes Lightning's ``manual_backward``). ``no_sync()``:
    a context for every backward pass of the chunked step but its last (DDP then all-reduces
    the gradients once, not once per chunk).
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
        parts = list(zip(chunks, grad[mask].split([len(c["input_ids"]) for c in chunks]), strict=True))
        for i, (chunk, chunk_grad) in enumerate(parts):
            with no_sync() if no_sync is not None and i + 1 < len(parts) else contextlib.nullcontext():
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
        loss: str = "url",
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
        log_every_n_steps: int = 1,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.reranker = reranker
        self.weight_options = weight  # spec, dtype and hyper-parameters, checked when built
        self.direction = direction
        if loss not in ("url", "native_sft", "native_infonce"):
            raise ValueError(f"loss must be url, native_sft or native_infonce, got {loss!r}")
        self.loss_name = loss
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.accumulate, self.grad_clip, self.chunk_size = accumulate, grad_clip, chunk_size
        self.guard = NonFiniteGuard(nonfinite, max_consecutive_skips)
        self.history = history  # urlkit.records.CsvLog or None
        self.histogram_every_n_steps = histogram_every_n_steps
        if log_every_n_steps < 1:
            raise ValueError(f"log.every_n_steps must be >= 1, got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps
        self.step_stats = StepAccumulator()
        self._step_flags: torch.Tensor | None = None  # the guard's flags of the step's micro-batches
        self._step_batches: list[tuple] = []  # (logits, loss, info, mask, query ids): to name a fault
        # flags every rank must agree on at a step's end besides the guard's (a pre-emption notice,
        # urlkit.training.preemption): read with the step's one host sync, max over the ranks
        self.notices: Callable[[], list[bool]] | None = None
        self.agreed_notices: list[bool] = []  # as the last step's reduce read them
        self.items_consumed = 0  # training groups consumed: where the data stream resumes
        self._resumed_rng = None  # RNG state of a checkpoint, restored at the next step
        self._trainable: list[tuple[str, torch.nn.Parameter]] | None = None  # see trainable()

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps dropped by ``nonfinite="skip"`` (see urlkit.training.nonfinite)."""
        return self.guard.skipped_steps

    def trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(name, parameter) of everything the optimizer updates, listed at the first optimizer
        step (after any strategy wrapped the model) and kept: walking the backbone's modules
        twice a step for the guard cost ~30 ms of a ~700 ms step."""
        if self._trainable is None:
            self._trainable = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        return self._trainable

    # -- the step ----------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        """(B, 1+N, K) score columns for a batch of training groups."""
        return scatter_scores(self.reranker(batch["prompts"]), batch["mask"])

    def training_step(self, batch: dict, batch_idx: int) -> None:
        mask = batch["mask"]
        # DDP all-reduces the gradients once per optimizer step: in the last backward pass of
        # its last micro-batch (every other one runs under no_sync and adds up locally)
        last = len(self.step_stats) + 1 == self.accumulate
        with contextlib.nullcontext() if last else self._no_gradient_sync():
            logits, loss, info = url_backward(
                self.reranker, batch, self._url_loss, scale=1.0 / self.accumulate,
                chunked=bool(self.chunk_size), backward=self.manual_backward, no_sync=self._no_gradient_sync,
            )  # fmt: skip
        # every rank runs every backward (DDP's collectives must match), finite or not: the
        # guard's flags are read with the step's telemetry and the step dropped there
        flags = self.guard.batch_flags(logits, loss, info, mask)
        self._step_flags = flags if self._step_flags is None else torch.maximum(self._step_flags, flags)
        self._step_batches.append((logits, loss, info, mask, list(batch["query_ids"])))
        self.items_consumed += mask.shape[0] * self._world_size()  # global: where every rank's stream resumes
        self.step_stats.add(logits, loss, info, mask, batch["query_ids"], self.weight_options)
        if len(self.step_stats) == self.accumulate:
            self._optimizer_step()

    @property
    def between_steps(self) -> bool:
        """No micro-batch of an unfinished optimizer step is held: a checkpoint now is a step's."""
        return not self._step_batches

    def _url_loss(self, logits: torch.Tensor, mask: torch.Tensor):
        # a native loss (Figure 2) trains through the same step and logs the same columns: its
        # info is URL's on the same scores (the weights the native loss implies)
        loss, info = url_loss(logits.float(), weight=self.weight_options, direction=self.direction, mask=mask)
        if self.loss_name == "native_sft":
            loss = sft_loss(logits.float(), mask)
        elif self.loss_name == "native_infonce":
            loss = infonce_loss(logits.float(), mask, temperature=self.weight_options.params.temperature)
        return loss, info

    def _no_gradient_sync(self):
        """Lightning's DDP ``no_sync``: backward passes inside add up locally, none all-reduces."""
        strategy = self._trainer.strategy if self._trainer is not None else None
        block = getattr(strategy, "block_backward_sync", None)
        return block() if block is not None else contextlib.nullcontext()

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _optimizer_step(self) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        step = self.global_step + 1
        # with a loss scaler (16-mixed) an inf gradient is an overflow of the scaled loss: the
        # scaler skips that update and lowers its scale (no fault; the parameters are still checked)
        gradients = torch.zeros(1) if self._loss_scaled else self.guard.gradient_flag(p for _, p in self.trainable())
        device = self._step_flags.device
        # a fill per notice, not torch.tensor(notices, device=...): a copy from the host waits for the device
        notices = [torch.full((1,), float(n), device=device) for n in (self.notices() if self.notices else [])]
        flags = torch.cat([self._step_flags, gradients.to(device), *notices])
        # the step's one host sync before the update (the check of the updated parameters is the
        # other): telemetry, the guard's flags and the notices, reduced over the ranks
        row, flags = self.step_stats.finish(flags, gather=distributed.gather_rows)
        verdict, self.agreed_notices = flags[: len(STAGES)], [bool(flag) for flag in flags[len(STAGES) :]]
        batches, self._step_flags, self._step_batches = self._step_batches, None, []
        query_ids = self.step_stats.query_ids
        skipped = False
        if any(verdict):
            stage = STAGES[next(i for i, flag in enumerate(verdict) if flag)]
            described, query_ids = self._locate_fault(stage, batches)
            skipped = not self.guard.fault(f"{stage} ({described})" if described else stage, step, query_ids)
        if not skipped:  # nonfinite="skip" drops the whole step: nothing non-finite reaches the weights
            optimizer.step()  # clips (on_before_optimizer_step), steps, advances global_step
            scheduler.step()
            self.guard.parameters(
                self.trainable(), step=step, query_ids=query_ids, agree=lambda flag: distributed.agree(flag)
            )
        optimizer.zero_grad(set_to_none=True)
        self.guard.end_step(skipped, step=step, query_ids=query_ids)
        self._log_step(row, skipped, query_ids)

    def _locate_fault(self, stage: str, batches: list) -> tuple[str, list[str]]:
        """What was non-finite and in which queries, over every rank (the rare path: host syncs
        and a gather are fine here). A gradient is the whole step's: every query is named."""
        if stage == "gradient":
            described, bad = "", list(self.step_stats.query_ids)
        else:
            described, bad = self.guard.locate(stage, batches)
        found = distributed.gather((described, bad))
        return "; ".join(d for d, _ in found if d), [q for _, queries in found for q in queries]

    # -- logging -----------------------------------------------------------------------
    def _log_step(self, stats: dict, skipped: bool, query_ids: list[str]) -> None:
        row = {"step": self.global_step, **stats}
        row["lr"] = self.optimizers().param_groups[0]["lr"]
        row["skipped_steps"] = self.skipped_steps
        row["items_consumed"] = self.items_consumed
        if skipped:
            if self.global_rank == 0:
                print(f"[urlkit] skipped a non-finite step ({self.skipped_steps} so far); queries: "
                      f"{', '.join(query_ids)}", flush=True)  # fmt: skip
        elif row["step"] % self.log_every_n_steps == 0:
            if self.history is not None:
                self.history.append(row)
            for logger in self.loggers:
                logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
            if self.histogram_every_n_steps and row["step"] % self.histogram_every_n_steps == 0:
                self._log_histograms(row["step"])
        self.step_stats.reset()

    def _log_histograms(self, step: int) -> None:
        # every rank's weights (all ranks reach this step; only rank 0 has a W&B logger)
        w_pos = torch.cat(distributed.gather(torch.cat(self.step_stats.w_pos).cpu()))
        w_neg = torch.cat(distributed.gather(torch.cat(self.step_stats.w_neg).cpu()))
        for logger in self.loggers:
            if type(logger).__name__ != "WandbLogger":
                continue
            import wandb

            logger.experiment.log(
                {
                    "train/w_pos_hist": wandb.Histogram(w_pos.numpy()),
                    "train/w_neg_hist": wandb.Histogram(w_neg.numpy()),
                    "trainer/global_step": step,
                }
            )

    # -- optimisation ------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the gradients' global norm to ``grad_clip``. Lightning calls this inside
        ``optimizer.step()``, after a loss scaler (16-mixed) has unscaled the gradients: clipping
        before the step would clip the scaled ones (then divided by the scale: no update).
        The norm over the optimizer's parameters, as Lightning's own clipping takes it (which
        its mixed-precision plugin refuses for a fused optimizer also under bf16-mixed, where
        nothing is scaled, and its FSDP plugin refuses outright), FSDP's across the shards."""
        if self.grad_clip:
            root = getattr(getattr(self._trainer, "strategy", None), "model", None)
            distributed.clip_grad_norm([p for group in optimizer.param_groups for p in group["params"]], self.grad_clip,
                                       root=root)

    @property
    def _loss_scaled(self) -> bool:
        """Whether a loss scaler runs (16-mixed): the optimizer must then leave the unscaling to
        Lightning (not the fused AdamW, which would unscale inside its step, after the clipping)."""
        return getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is not None

    def configure_optimizers(self):
        optimizer = adamw([p for p in self.parameters() if p.requires_grad], self.lr, self.weight_decay,
                          fused=not self._loss_scaled)

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
        # every rank builds the checkpoint (rank 0 writes it): each rank's RNG goes in it
        states = distributed.gather(rng_state())
        checkpoint["urlkit"] = {
            "skipped_steps": self.guard.skipped_steps,
            "items_consumed": self.items_consumed,  # over all ranks
            "rng": states[0],
            "rng_per_rank": states,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("urlkit", {})
        self.guard.skipped_steps = state.get("skipped_steps", 0)
        self.items_consumed = state.get("items_consumed", 0)
        per_rank = state.get("rng_per_rank") or [state.get("rng")]
        # the same number of ranks continues each rank's generators; another one, rank 0's
        self._resumed_rng = per_rank[self.global_rank] if len(per_rank) == self._world_size() else per_rank[0]

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The RNG goes back to its checkpointed state right before the first resumed step: the
        # trainer draws random numbers while it sets up (see urlkit.training.checkpointing).
        if self._resumed_rng is not None:
            restore_rng_state(self._resumed_rng)
            self._resumed_rng = None
