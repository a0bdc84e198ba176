"""Training: optimizer steps/s, tokens/s and model FLOP utilisation of urlkit's step, its
variants (no prefix sharing, bf16 frozen weights, the constant-memory step), the native SFT
loss on the same step, and the peer's BCE step on the same pairs.

One urlkit step is what ``RerankerModule.training_step`` does for ``accumulate=1``:
``url_backward`` (score the 1+N documents, URL loss, backward), the step telemetry
(counterfactual weights, native losses), gradient clipping, AdamW, zero_grad; Lightning's
own bookkeeping is not timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from urlkit.bench.flops import ModelShape, batch_work, pass_rows
from urlkit.bench.measure import interleaved, median
from urlkit.build import weight_options
from urlkit.loss import sft_loss, url_loss
from urlkit.training.module import adamw, url_backward
from urlkit.training.telemetry import step_statistics


class Stepper:
    """One optimizer step of urlkit on a collated training batch."""

    def __init__(self, reranker, cfg, loss: str = "url", chunked: bool = False,
                 lora_dropout: float | None = None, **scoring):
        """``scoring``: :class:`urlkit.model.scoring.ScoringOptions` changed for this variant
        (a reranker over the same modules is built with them; nothing is mutated)."""
        self.reranker, self.chunked = reranker.with_options(**scoring), chunked
        self.dropouts = [m for name, m in reranker.named_modules() if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)]
        self.lora_dropout = lora_dropout  # None: the config's
        self.options, self.direction = weight_options(cfg), cfg.direction.name
        self.loss = loss
        self.trainable = [p for p in reranker.parameters() if p.requires_grad]
        self.optimizer = adamw(self.trainable, float(cfg.train.lr))
        self.grad_clip = cfg.train.grad_clip

    def loss_fn(self, logits, mask):
        if self.loss == "sft":  # the native loss: no weights, no telemetry inputs
            return sft_loss(logits.float(), mask), None
        return url_loss(logits.float(), weight=self.options, direction=self.direction, mask=mask)

    def __call__(self, batch: dict) -> None:
        reranker = self.reranker
        if not (reranker.training and reranker.decoder.training and reranker.head.training):
            # Lightning sets training mode once a fit (and after each validation), not every
            # step: ~2,500 modules, ~7 ms. Another section may have left them in eval mode
            reranker.train()
        configured = [m.p for m in self.dropouts]
        if self.lora_dropout is not None:
            for module in self.dropouts:
                module.p = self.lora_dropout
        try:
            logits, loss, info = url_backward(self.reranker, batch, self.loss_fn, chunked=self.chunked)
        finally:
            for module, p in zip(self.dropouts, configured, strict=True):
                module.p = p
        if info is not None:
            step_statistics(logits, loss, info, batch["mask"], self.options)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


@dataclass
class StepFigures:
    name: str
    seconds: float  # median seconds per optimizer step
    prompt_tokens_per_s: float  # prompt tokens of the 1+N documents per second (median over rounds)
    flops_per_s: float  # model FLOP/s (median over rounds)
    dtype: torch.dtype
    note: str = ""
    pass_rows: float = float("nan")  # rows of a step's decoder passes (flops.pass_rows; median over rounds)


def step_figures(name: str, times: list[float], batches: list[dict], shape: ModelShape | None,
                 share_prefix: bool, dtype: torch.dtype, note: str = "", read_only: bool = False) -> StepFigures:
    """Per-round rates (round r ran batch r) and their medians. ``read_only``: the step's last
    layer computed the scored tokens' output only (:func:`urlkit.bench.flops.reads_only_scored`)."""
    tokens, flops, rows = [], [], []
    for seconds, batch in zip(times, batches, strict=False):
        computed, context, _, prompt_tokens, slots = batch_work(batch["prompts"], share_prefix)
        tokens.append(prompt_tokens / seconds)
        rows.append(pass_rows(slots))
        if shape is not None:
            unread = computed - len(batch["prompts"]["input_ids"]) if read_only else 0
            flops.append(shape.training_flops(computed, context, unread) / seconds)
    return StepFigures(name, median(times), median(tokens), median(flops) if flops else float("nan"), dtype, note,
                       median(rows))


def loss_seconds(cfg, batch_logits: torch.Tensor, mask: torch.Tensor, repeats: int = 200) -> dict[str, float]:
    """Seconds of the loss alone (forward + gradient w.r.t. the logits) and of the step telemetry,
    on logits of the step's shape: URL with the config's weight and direction vs native SFT."""
    options = weight_options(cfg)
    logits = batch_logits.detach().float().requires_grad_(True)

    def url():
        loss, _ = url_loss(logits, weight=options, direction=cfg.direction.name, mask=mask)
        torch.autograd.grad(loss, logits)

    def sft():
        torch.autograd.grad(sft_loss(logits, mask), logits)

    loss, info = url_loss(logits, weight=options, direction=cfg.direction.name, mask=mask)

    def telemetry():
        step_statistics(logits.detach(), loss.detach(), info, mask, options)

    out = {}
    for name, fn in (("url", url), ("sft", sft), ("telemetry", telemetry)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = (time.perf_counter() - start) / repeats
    return out


def peer_pairs(batch: dict, data) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """The (query text, document text) pairs of a training batch and their BCE labels
    (1 for the positive, 0 for negatives), in the batch's row order."""
    from urlkit.data.prompts import _document_text

    queries = {q.id: q for q in data.train.queries}
    pairs, labels = [], []
    for query_id, doc_ids, mask in zip(batch["query_ids"], batch["doc_ids"], batch["mask"].tolist(), strict=True):
        for slot, (doc_id, real) in enumerate(zip(doc_ids, mask, strict=True)):
            if real:
                pairs.append((queries[query_id].text, _document_text(data.train.corpus[doc_id])))
                labels.append(1.0 if slot == 0 else 0.0)
    return pairs, torch.tensor(labels)


def run_training(variants: dict, rounds: int, sync) -> dict[str, list[float]]:
    """Interleaved timing of ``variants[name](r)`` (one optimizer step on round r's batch)."""
    return interleaved(variants, rounds=rounds, warmup=1, sync=sync)
