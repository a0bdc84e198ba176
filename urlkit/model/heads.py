"""Scoring heads: the backbone's hidden state at the final position -> K score columns.

A point-wise LLM reranker reads the next-token logits of K label tokens after the prompt
(column 0 "yes" = relevant, column 1 "no" = irrelevant, optional extra tokens, Appendix B.3):

    s_k = h · W[t_k] (+ b[t_k])        h: final hidden state (after the last norm), (H,)
                                       W: LM head (V, H), t_k: the K label token ids

Only the K rows of W are multiplied, never the full vocabulary (V = 49152 for SmolLM2,
~152K for Qwen), so a forward pass costs O(K·H) per prompt for the head instead of O(V·H).
Scores are computed in float32 even when the backbone runs in bf16: the URL weights are
computed from them (the paper computes them in fp32, Table 5).

This module is pure torch + a tokenizer; it imports nothing of urlkit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("lm_head", "rand")
# The keys of a collated batch that the decoder consumes (others, e.g. ids, are bookkeeping).
# Qwen2.5-VL computes its 3-D multimodal rotary positions only when given mm_token_type_ids
# (1 at image tokens); without them the image patches would get plain 1-D positions.
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "mm_token_type_ids",
)


def resolve_token_ids(tokenizer: Any, labels: Sequence[str], context: str = "") -> list[int]:
    """The token id of each label; a label that is not exactly one token is a ``ValueError``.

    The answer follows the assistant turn opening. SmolLM2's (ChatML) template ends the prompt
    with ``"<|im_start|>assistant\\n"``, so the answer starts a new line and is the token
    ``"yes"`` (id 10407), *not* ``" yes"`` (9805, the mid-sentence form). ``context``: the
    prompt's text before the answer (``PromptRenderer.answer_context``); each label is
    tokenised after it, as the model writes it there. A byte-level BPE splits at the newline,
    so there it is the label encoded alone; a SentencePiece tokeniser encodes "yes" alone as
    "▁yes" (a word start) but writes other pieces after a newline, and those are the ones the
    head must read. Where a label merges with the context's last token (a prompt ending in a
    space), it is read alone. Pass labels as the model writes them at a line start.
    """
    before = tokenizer.encode(context, add_special_tokens=False) if context else []
    ids: list[int] = []
    for label in labels:
        pieces = tokenizer.encode(label, add_special_tokens=False)
        joined = tokenizer.encode(context + label, add_special_tokens=False) if before else []
        if before and joined[: len(before)] == before:
            pieces = joined[len(before) :]  # the tokens the model writes after the prompt
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            where = f" after the prompt's {context[-20:]!r}" if before else ""
            raise ValueError(
                f"the label {label!r} is not a single token{where}: it tokenises to {shown} (ids {pieces}). "
                "Pick labels that are one token each, written as they would start the answer "
                "(e.g. 'yes' / 'no', without a leading space)"
            )
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"the labels {list(labels)} map to repeated token ids {ids}")
    return ids


def final_position(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` (B, L, H) -> the state of each row's last real token, (B, H)
    (:func:`final_index`)."""
    if attention_mask.dim() != 2 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match hidden states "
            f"{tuple(hidden.shape)}; expected (batch, length)"
        )
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), final_index(attention_mask)]


def final_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ``attention_mask`` -> the column of each row's last real token, (B,).

    With LEFT padding (the contract of ``PromptRenderer.collate``) that is L - 1 for every
    row; reading the last 1 of ``attention_mask`` instead makes right padding work too.
    """
    present = attention_mask.bool()
    if not bool(present.any(dim=1).all()):
        raise ValueError("a prompt in the batch has no tokens (an all-zero attention_mask row)")
    return attention_mask.shape[1] - 1 - present.flip(dims=[1]).int().argmax(dim=1)


class LMHeadRows(nn.Module):
    """The K rows of the LM head for ``token_ids``: ``scores = h @ W[t].T (+ b[t])``.

    Frozen (default): the rows are a copied buffer, so no gradient reaches them and the result
    equals the full LM head's logits at those ids. Trainable (paper Table 15, "LM head frozen
    or trainable"): the rows are a new ``nn.Parameter`` initialised from the copy, so training
    them never touches the LM head itself, which for tied models (SmolLM2) is the input
    embedding matrix. Pass ``model.get_output_embeddings().weight``: it is the LM head whether
    or not ``tie_word_embeddings`` is set.
    """

    def __init__(
        self,
        lm_head_weight: torch.Tensor,
        token_ids: Sequence[int],
        trainable: bool = False,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if lm_head_weight.dim() != 2:
            raise ValueError(
                f"lm_head_weight must be (vocab, hidden), got {tuple(lm_head_weight.shape)}"
            )
        vocab = lm_head_weight.shape[0]
        if not token_ids or any(not 0 <= t < vocab for t in token_ids):
            raise ValueError(
                f"token ids {list(token_ids)} must be non-empty and within [0, {vocab})"
            )
        self.token_ids = [int(t) for t in token_ids]
        index = torch.tensor(self.token_ids, device=lm_head_weight.device)
        # Advanced indexing copies: the rows own their storage, never a view of the LM head.
        rows = lm_head_weight.detach()[index].float()
        rows_bias = bias.detach()[index].float() if bias is not None else None
        self.trainable = trainable
        if trainable:
            self.rows = nn.Parameter(rows)
            self.bias = nn.Parameter(rows_bias) if rows_bias is not None else None
        else:
            self.register_buffer("rows", rows)
            self.register_buffer("bias", rows_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., K) float32 scores."""
        return F.linear(hidden.float(), self.rows, self.bias)

    def extra_repr(self) -> str:
        return (
            f"token_ids={self.token_ids}, hidden={self.rows.shape[1]}, trainable={self.trainable}"
        )


class RandomProjection(nn.Module):
    """The learnable, randomly initialised projection of ``direction=rand`` (paper Table 3).

    Each of the K rows is drawn from N(0, I_H) with a private ``torch.Generator(seed)`` (the same
    seed gives the same rows, the global RNG is untouched) and rescaled to L2 norm ``row_norm``.
    ``build_head`` passes the mean norm of the LM-head rows it replaces (SmolLM2 yes/no: ~2.8),
    so initial scores have the magnitude of the native logits' and the loss starts in the same
    regime; only the direction is random. Always a trainable parameter.
    """

    def __init__(self, hidden_size: int, k: int, seed: int, row_norm: float = 1.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        rows = torch.randn(k, hidden_size, generator=generator)
        self.weight = nn.Parameter(rows / rows.norm(dim=1, keepdim=True) * float(row_norm))
        self.seed = int(seed)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., K) float32 scores."""
        return F.linear(hidden.float(), self.weight)

    def extra_repr(self) -> str:
        return f"hidden={self.weight.shape[1]}, k={self.weight.shape[0]}, seed={self.seed}"


def build_head(
    kind: str,
    backbone_model: nn.Module,
    token_ids: Sequence[int],
    trainable: bool = False,
    seed: int = 0,
) -> nn.Module:
    """``lm_head``: :class:`LMHeadRows` of the backbone (``trainable`` = paper Table 15).
    ``rand``: :class:`RandomProjection` with K = ``len(token_ids)`` rows scaled like those LM-head
    rows; it is learnable by definition (Table 3), so ``trainable`` does not apply to it.
    """
    lm_head = _causal_lm(backbone_model).get_output_embeddings()
    if kind == "lm_head":
        return LMHeadRows(
            lm_head.weight, token_ids, trainable=trainable, bias=getattr(lm_head, "bias", None)
        )
    if kind == "rand":
        rows = lm_head.weight.detach()[torch.tensor(list(token_ids), device=lm_head.weight.device)]
        row_norm = rows.float().norm(dim=1).mean().item()
        return RandomProjection(lm_head.weight.shape[1], len(token_ids), seed, row_norm=row_norm)
    raise ValueError(f"head kind {kind!r} is not one of {', '.join(HEAD_KINDS)}")


@torch.no_grad()
def top_tokens_by_mean_logit(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    k: int,
    leading: Sequence[int] = (),
) -> list[int]:
    """The K-token set of an expanded head (paper Appendix B.3: "top-16 tokens by average logit
    over 10,000 sampled instances"): ``leading`` (the yes/no ids) first, then the other tokens
    by decreasing mean final-position logit over the prompts in ``batches``.

    ``batches`` are collated prompt batches (``input_ids``, ``attention_mask``, optional image
    inputs). Only the final positions are projected on the vocabulary.
    """
    if k < len(leading):
        raise ValueError(
            f"k={k} is smaller than the {len(leading)} leading token ids {list(leading)}"
        )
    causal_lm = _causal_lm(model)
    lm_head = causal_lm.get_output_embeddings()
    total = torch.zeros(lm_head.weight.shape[0], dtype=torch.float64, device=lm_head.weight.device)
    count = 0
    for batch in batches:
        inputs = decoder_inputs(batch)
        hidden = causal_lm.base_model(**inputs, use_cache=False).last_hidden_state
        total += lm_head(final_position(hidden, batch["attention_mask"])).double().sum(dim=0)
        count += hidden.shape[0]
    if count == 0:
        raise ValueError(
            "top_tokens_by_mean_logit needs at least one prompt; the batches were empty"
        )
    chosen = [int(t) for t in leading]
    for token in (total / count).argsort(descending=True).tolist():
        if len(chosen) == k:
            break
        if token not in chosen:
            chosen.append(token)
    return chosen


def decoder_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model inputs of a collated batch (:data:`MODEL_INPUTS` that are present)."""
    if "input_ids" not in batch or "attention_mask" not in batch:
        raise ValueError(f"a batch needs input_ids and attention_mask; it has {sorted(batch)}")
    return {key: batch[key] for key in MODEL_INPUTS if batch.get(key) is not None}


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (peft injects LoRA in place, so its modules
    are the ones the wrapper runs)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
