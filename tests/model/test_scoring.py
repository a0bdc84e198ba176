"""Reranker: the one scoring function, on the tiny backbone, with padding and with LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from urlkit.model.heads import build_head, resolve_token_ids
from urlkit.model.scoring import Reranker, inner_decoder

QUESTIONS = [
    "Query: jaguar speed. Document: The jaguar runs fast. Relevant?",
    "Is water wet?",
    "hi",
]


def _prompts(tokenizer):
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]


def _reranker(backbone, kind="lm_head"):
    yes_no = resolve_token_ids(backbone.tokenizer, ["yes", "no"])
    return Reranker(backbone, build_head(kind, backbone.model, yes_no)), yes_no


def test_scores_equal_the_full_model_logits_at_the_last_position(tiny_backbone):
    reranker, yes_no = _reranker(tiny_backbone)
    batch = tiny_backbone.tokenizer(
        _prompts(tiny_backbone.tokenizer), return_tensors="pt", padding=True
    )
    assert batch["attention_mask"][:, 0].tolist() == [1, 0, 0], "left-padded by the tokenizer"
    with torch.no_grad():
        scores = reranker(batch)
        reference = tiny_backbone.model(**batch).logits[:, -1, yes_no]
    assert scores.shape == (3, 2) and scores.dtype == torch.float32
    assert torch.allclose(scores, reference, atol=1e-6)


def test_a_prompt_scores_the_same_alone_left_padded_or_right_padded(tiny_backbone):
    tokenizer = tiny_backbone.tokenizer
    reranker, _ = _reranker(tiny_backbone)
    prompts = _prompts(tokenizer)
    with torch.no_grad():
        alone = torch.cat([reranker(tokenizer([p], return_tensors="pt")) for p in prompts])
        left = reranker(tokenizer(prompts, return_tensors="pt", padding=True))
        tokenizer.padding_side = "right"
        right = reranker(tokenizer(prompts, return_tensors="pt", padding=True))
        tokenizer.padding_side = "left"
    assert torch.allclose(left, alone, atol=1e-5) and torch.allclose(right, alone, atol=1e-5)
    assert not torch.allclose(alone[0], alone[1]), "different prompts, different scores"


def test_extra_batch_keys_are_ignored_and_missing_ones_are_named(tiny_backbone):
    reranker, _ = _reranker(tiny_backbone)
    batch = dict(tiny_backbone.tokenizer(["hello"], return_tensors="pt"))
    with torch.no_grad():
        assert reranker({**batch, "doc_ids": ["d1"], "pixel_values": None}).shape == (1, 2)
    with pytest.raises(ValueError, match="attention_mask"):
        reranker({"input_ids": batch["input_ids"]})


@pytest.mark.parametrize(
    "wrap_first", [False, True], ids=["reranker-then-lora", "lora-then-reranker"]
)
def test_lora_parameters_receive_gradients_through_the_reranker(tiny_backbone, wrap_first):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    if wrap_first:
        tiny_backbone.model = get_peft_model(tiny_backbone.model, lora)
        reranker, _ = _reranker(tiny_backbone)
    else:
        reranker, _ = _reranker(tiny_backbone)
        tiny_backbone.model = get_peft_model(tiny_backbone.model, lora)
    assert inner_decoder(tiny_backbone.model) is reranker.decoder
    # peft initialises lora_B to zero; make the adapters active so the output depends on A too
    for name, parameter in tiny_backbone.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)

    batch = tiny_backbone.tokenizer(
        _prompts(tiny_backbone.tokenizer), return_tensors="pt", padding=True
    )
    scores = reranker(batch)
    (scores[:, 0] - scores[:, 1]).sum().backward()
    lora_grads = {n: p.grad for n, p in tiny_backbone.model.named_parameters() if "lora_" in n}
    assert len(lora_grads) == 2 * 2 * 2  # (A, B) x (q, v) x 2 layers
    assert all(g is not None and g.abs().sum() > 0 for g in lora_grads.values())
    frozen = [p for n, p in tiny_backbone.model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.grad is None for p in frozen)


def test_the_rand_head_scores_through_the_same_path(tiny_backbone):
    reranker, _ = _reranker(tiny_backbone, kind="rand")
    batch = tiny_backbone.tokenizer(
        _prompts(tiny_backbone.tokenizer), return_tensors="pt", padding=True
    )
    scores = reranker(batch)
    scores.sum().backward()
    assert scores.shape == (3, 2) and reranker.head.weight.grad is not None


def test_a_model_without_a_decoder_is_a_clear_error():
    with pytest.raises(TypeError, match="inner decoder"):
        inner_decoder(torch.nn.Linear(2, 2))


def test_training_mode_on_the_cpu_uses_the_math_attention_kernel_with_the_same_scores(tiny_backbone, monkeypatch):
    """``cpu_training_attention="math"``: a training-mode pass on the CPU runs SDPA's math
    kernel (the fused kernel's CPU backward is the slow part of a step), eval mode keeps
    PyTorch's choice; the scores agree with the fused kernel's."""
    import torch.nn.attention as attention

    reranker, _ = _reranker(tiny_backbone)
    batch = tiny_backbone.tokenizer(_prompts(tiny_backbone.tokenizer), return_tensors="pt", padding=True)
    chosen = []
    real = attention.sdpa_kernel
    monkeypatch.setattr(attention, "sdpa_kernel", lambda backends, *a, **k: chosen.append(backends) or real(backends, *a, **k))
    results = {}
    for setting in ("math", "default"):
        scorer = reranker.with_options(cpu_training_attention=setting)
        scorer.train()
        scorer.zero_grad(set_to_none=True)
        scores = scorer(batch)
        scores.sum().backward()  # the math kernel's graph backpropagates
        results[setting] = scores.detach()
    assert chosen == [attention.SDPBackend.MATH], "math in training mode only where asked"
    assert torch.allclose(results["math"], results["default"], atol=1e-5)
    reranker.eval()
    with torch.no_grad():
        reranker(batch)
    assert len(chosen) == 1, "eval mode keeps PyTorch's kernel choice"
    with pytest.raises(ValueError, match="cpu_training_attention"):
        reranker.with_options(cpu_training_attention="flash")
