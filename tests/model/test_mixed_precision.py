"""The bf16 fast path: ``model.dtype=auto`` picks bf16 only where the machine has bf16 units,
adapters stay float32, and the autocast pass gives the scores and gradients of peft's own
cast-per-projection pass. Both dtype paths are forced here, whatever this CPU has."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import urlkit.hardware as machine
from urlkit.build import add_lora
from urlkit.data.format import Document, Query
from urlkit.data.prompts import PromptRenderer
from urlkit.model.backbone import load_backbone, parse_dtype
from urlkit.model.heads import build_head, resolve_token_ids
from urlkit.model.scoring import Reranker, ScoringOptions

LORA = OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]})


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "amx_bf16"}, torch.bfloat16),
                                                 ({"avx2", "avx512_bf16"}, torch.bfloat16),
                                                 ({"avx2", "fma"}, torch.float32), (set(), torch.float32)])
def test_auto_dtype_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.auto_weight_dtype() == expected
    assert parse_dtype("auto") == expected
    assert str(expected).removeprefix("torch.") in machine.describe_auto_dtype(expected)


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                      ((7, 5), torch.float32)])
def test_auto_dtype_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"amx_bf16"}))  # the GPU decides, not the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert machine.auto_weight_dtype() == expected
    assert machine.auto_weight_dtype("cpu") == torch.bfloat16


def _reranker(dtype: torch.dtype, lora_dropout: float = 0.0, **options) -> tuple[Reranker, dict]:
    backbone = load_backbone({"source": "tiny", "name": "tiny_llama", "seed": 0, "dtype": dtype})
    torch.manual_seed(0)  # LoRA A is initialised from the global generator
    add_lora(backbone.model, OmegaConf.merge(LORA, {"dropout": lora_dropout}))
    for name, parameter in backbone.model.named_parameters():
        if "lora_B" in name:  # LoRA B starts at zero: make every gradient non-trivial
            parameter.data.normal_(0, 0.05)
    head = build_head("lm_head", backbone.model, resolve_token_ids(backbone.tokenizer, ["yes", "no"]))
    renderer = PromptRenderer(backbone.tokenizer, max_length=128)
    docs = [Document(id="d1", text="Cats sleep in warm, sheltered places such as sunny windowsills."),
            Document(id="d2", text="A hand saw cuts wood."), Document(id="d3", text="Rain.")]
    query = Query(id="q1", text="where do cats sleep", qrels={"d1": 1})
    batch = renderer.collate([renderer.encode("Find the passage.", query, doc) for doc in docs])
    return Reranker(backbone, head, ScoringOptions(**options)), batch


def _scores_and_gradients(reranker: Reranker, batch: dict) -> tuple[torch.Tensor, dict]:
    weights = torch.linspace(-1, 1, 2 * len(batch["input_ids"])).view(-1, 2)
    reranker.zero_grad(set_to_none=True)
    scores = reranker(batch)
    (scores * weights).sum().backward()
    return scores.detach(), {n: p.grad.clone() for n, p in reranker.named_parameters() if p.grad is not None}


def test_adapters_and_head_stay_float32_on_bf16_weights():
    reranker, batch = _reranker(torch.bfloat16)
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert reranker.decoder.get_input_embeddings().weight.dtype == torch.bfloat16
    scores, grads = _scores_and_gradients(reranker, batch)
    assert scores.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads.values())


@pytest.mark.parametrize("share_prefix", [True, False], ids=["shared-prefix", "plain"])
def test_bf16_autocast_pass_equals_peft_cast_per_projection(share_prefix):
    """mixed=True (autocast, adapters' products in bf16 from float32 weights) against
    mixed=False (peft casts every adapter input to float32 and back), both on bf16 weights:
    the same scores and gradients up to bf16 rounding."""
    fast, batch = _reranker(torch.bfloat16, share_prefix=share_prefix)
    slow = fast.with_options(mixed=False)
    (fast_scores, fast_grads), (slow_scores, slow_grads) = _scores_and_gradients(fast, batch), _scores_and_gradients(slow, batch)
    assert not torch.equal(fast_scores, slow_scores), "the two paths are different computations"
    assert torch.allclose(fast_scores, slow_scores, atol=0.05 * slow_scores.abs().max().item())
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) == 12
    for name, grad in slow_grads.items():
        assert grad.abs().max() > 0, name
        relative = (fast_grads[name] - grad).norm() / grad.norm()
        assert relative < 0.05, (name, relative.item())


def test_bf16_fast_path_equals_the_float32_model_up_to_bf16_rounding():
    """The whole fast path (bf16 weights, autocast, shared prefixes) against the float32
    model with the same adapters, scored the plain way."""
    fast, batch = _reranker(torch.bfloat16)
    exact, _ = _reranker(torch.float32, share_prefix=False)
    (fast_scores, fast_grads), (exact_scores, exact_grads) = _scores_and_gradients(fast, batch), _scores_and_gradients(exact, batch)
    assert torch.allclose(fast_scores, exact_scores, atol=0.05 * exact_scores.abs().max().item())
    for name, grad in exact_grads.items():
        assert (fast_grads[name] - grad).norm() / grad.norm() < 0.05, name


def test_mixed_changes_nothing_on_float32_weights():
    reranker, batch = _reranker(torch.float32)
    one, other = _scores_and_gradients(reranker, batch), _scores_and_gradients(reranker.with_options(mixed=False), batch)
    assert torch.equal(one[0], other[0])
    assert all(torch.equal(one[1][name], other[1][name]) for name in one[1])


def _peft_autocast_scores_and_gradients(reranker: Reranker, batch: dict) -> tuple[torch.Tensor, dict]:
    """The autocast pass with peft's own LoRA forward (its input cast off): the reference
    that the fused LoRA layers must reproduce."""
    import urlkit.model.lora as lora
    import urlkit.model.scoring as scoring

    layers = [m for m in reranker.decoder.modules() if type(m) is lora.fused_lora_class()]
    for layer in layers:
        layer.__class__ = lora._peft_linear()
        layer.cast_input_dtype_enabled = False
    original, scoring.fuse_lora = scoring.fuse_lora, lambda module: 0
    try:
        return _scores_and_gradients(reranker, batch)
    finally:
        scoring.fuse_lora = original
        for layer in layers:
            layer.__class__ = lora.fused_lora_class()
            layer.cast_input_dtype_enabled = True


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_lora_equals_peft_forward_under_autocast(dropout):
    """The fused adapter product (one addmm_ into the base projection's output) against
    peft's product-scale-add on the same bf16 weights, same dropout masks (same seed)."""
    import urlkit.model.lora as lora

    fast, batch = _reranker(torch.bfloat16, lora_dropout=dropout)
    fast.train()
    torch.manual_seed(1)
    fused_scores, fused_grads = _scores_and_gradients(fast, batch)
    layers = [m for m in fast.decoder.modules() if isinstance(m, lora._peft_linear())]
    assert layers and all(type(m) is lora.fused_lora_class() for m in layers), "the mixed pass fuses every LoRA layer"
    torch.manual_seed(1)
    peft_scores, peft_grads = _peft_autocast_scores_and_gradients(fast, batch)
    assert torch.allclose(fused_scores, peft_scores, atol=0.05 * peft_scores.abs().max().item())  # bf16 rounding, as above
    assert fused_grads.keys() == peft_grads.keys() and len(peft_grads) == 12
    for name, grad in peft_grads.items():
        assert (fused_grads[name] - grad).norm() / grad.norm() < 0.05, name
    torch.manual_seed(2)
    other_mask = _scores_and_gradients(fast, batch)[0]
    assert (dropout == 0) == torch.equal(other_mask, fused_scores), "dropout draws its masks in the fused path"


def test_fused_lora_is_peft_outside_autocast_and_when_merged():
    import urlkit.model.lora as lora

    reranker, batch = _reranker(torch.float32)
    layer = next(m for m in reranker.decoder.modules() if type(m) is lora._peft_linear())
    x = torch.randn(3, 5, layer.in_features)
    expected = layer(x)
    n_layers = len(lora.lora_layers(reranker.decoder))
    assert n_layers == 6 and lora.fuse_lora(reranker.decoder) == n_layers and lora.fuse_lora(reranker.decoder) == 0
    assert type(layer) is lora.fused_lora_class()
    assert torch.equal(layer(x), expected)  # float32, no autocast: peft's own forward
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = layer(x)
        layer.merge()
        merged = layer(x)  # merged: the base layer alone (peft's path)
    assert fused.dtype == merged.dtype == torch.bfloat16
    assert torch.allclose(fused.float(), expected, atol=0.02 * expected.abs().max().item())
    assert torch.allclose(merged.float(), expected, atol=0.02 * expected.abs().max().item())
