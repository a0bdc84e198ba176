"""Evaluation: documents scored per second by ``rerank_split`` (the path ``urlkit.evaluate``
and the training callbacks run), its padding, and the variants it was chosen over.

Variants, all on the same (query, candidate) pairs of the test split:

* ``rerank_split`` at several batch sizes: shared prefixes, query-contiguous batches;
* ``continuations unpacked``: the same with one row per continuation instead of packed rows;
* ``not folded``: the last shared level in its own decoder pass instead of opening the packed rows;
* ``LoRA not merged``: the adapters' extra matrix products while scoring;
* ``plain``: one decoder pass per batch (no prefix sharing), batches sorted by length
  (the previous ``rerank_split``);
* ``full-vocab``: the plain pass through the whole causal LM, logits over the full
  vocabulary at every position, then the yes/no columns of the last one (what the gathered
  K-row head avoids);
* ``no_grad``: the shared-prefix pass under ``torch.no_grad`` instead of ``inference_mode``;
* bfloat16 frozen weights.
"""

from __future__ import annotations

import time

import torch

from urlkit.bench.flops import ModelShape, batch_work, pass_rows
from urlkit.evaluation.rerank import rerank_split


class Recorder(torch.nn.Module):
    """Stands in for the reranker to capture the batches ``rerank_split`` forms (untimed)."""

    def __init__(self):
        super().__init__()
        self.batches: list[dict] = []

    def forward(self, batch):
        self.batches.append(batch)
        return torch.zeros(len(batch["input_ids"]), 2)


def subset(split, queries: int):
    """The split restricted to its first ``queries`` queries (what ``max_queries`` scores)."""
    import dataclasses

    return dataclasses.replace(split, queries=split.queries[:queries])


def rerank_batches(renderer, split, ranking, depth: int, batch_size: int) -> list[dict]:
    recorder = Recorder()
    rerank_split(recorder, renderer, split, ranking, depth=depth, batch_size=batch_size, progress=False)
    return recorder.batches


def length_sorted_batches(renderer, split, ranking, depth: int, batch_size: int) -> list[dict]:
    """Prompts sorted by length across queries (the padding-optimal order without sharing)."""
    encoded = [renderer.encode(split.instruction_for(q), q, split.corpus[d])
               for q in split.queries for d, _ in ranking.get(q.id, [])[:depth]]
    encoded.sort(key=lambda e: len(e.input_ids))
    return [renderer.collate(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)]


def unsorted_batches(renderer, split, ranking, depth: int, batch_size: int) -> list[dict]:
    encoded = [renderer.encode(split.instruction_for(q), q, split.corpus[d])
               for q in split.queries for d, _ in ranking.get(q.id, [])[:depth]]
    return [renderer.collate(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)]


def work(batches: list[dict], share_prefix: bool, shape: ModelShape | None, read_only: bool = False) -> dict[str, float]:
    """Tokens, padding share and model FLOPs of a list of batches, as the reranker computes them
    (``read_only``: its last layer's output for the scored tokens only, ``flops.reads_only_scored``)."""
    computed = context = slots = prompt = prompts = 0
    passes: list[int] = []
    for batch in batches:
        c, x, s, p, sizes = batch_work(batch, share_prefix)
        computed, context, slots, prompt = computed + c, context + x, slots + s, prompt + p
        prompts += len(batch["input_ids"])
        passes += sizes
    unread = computed - prompts if read_only else 0
    return {"computed": computed, "slots": slots, "prompt": prompt, "padding": 1 - computed / slots, "batches": len(batches),
            "passes": len(passes), "pass_rows": pass_rows(passes),
            "flops": shape.forward_flops(computed, context, unread) if shape is not None else float("nan")}


def full_vocab_scorer(causal_lm, token_ids: list[int]):
    """Scores through the whole LM head at every position (the naive path)."""
    index = torch.tensor(token_ids)

    @torch.inference_mode()
    def score(batches: list[dict]) -> None:
        causal_lm.eval()
        device = next(causal_lm.parameters()).device
        for batch in batches:
            logits = causal_lm(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                               use_cache=False).logits
            logits[:, -1, index.to(device)].float()

    return score


def batches_scorer(reranker, share_prefix: bool, mode: str = "inference_mode"):
    """Scores pre-collated batches with the reranker under ``inference_mode`` or ``no_grad``."""
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad

    variant = reranker.with_options(share_prefix=share_prefix)

    def score(batches: list[dict]) -> None:
        variant.eval()
        with context():
            for batch in batches:
                variant(batch)

    return score


def encode_seconds(renderer_factory, split, ranking, depth: int) -> tuple[float, float]:
    """Seconds per pair to tokenise the prompts: a fresh renderer (cold) and again (cached)."""
    pairs = [(q, split.corpus[d]) for q in split.queries for d, _ in ranking.get(q.id, [])[:depth]]
    renderer = renderer_factory()
    out = []
    for _ in range(2):
        start = time.perf_counter()
        for q, doc in pairs:
            renderer.encode(split.instruction_for(q), q, doc)
        out.append((time.perf_counter() - start) / len(pairs))
    return out[0], out[1]
