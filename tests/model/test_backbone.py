"""load_backbone: the tiny test model, hub names and local folders, spec errors, VL dispatch."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch
from omegaconf import OmegaConf

from urlkit.model.backbone import Backbone, ModelLoadError, load_backbone


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_backbone_is_seeded_and_uses_the_real_tokenizer(smollm2_tokenizer):
    first = load_backbone({"source": "tiny", "seed": 3})  # the first also pays for imports

    model = first.model
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.num_attention_heads == 4 and model.config.num_key_value_heads == 2
    assert model.config.vocab_size == len(first.tokenizer) == 49152
    assert first.tokenizer.padding_side == "left"
    assert first.tokenizer("yes no")["input_ids"] == smollm2_tokenizer("yes no")["input_ids"]
    # tied like SmolLM2: the LM head is the embedding matrix
    assert (
        model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )

    rng_before = torch.get_rng_state()
    again = load_backbone({"source": "tiny", "seed": 3})  # its build time: a bench figure, not a test
    assert torch.equal(torch.get_rng_state(), rng_before), (
        "building must not consume the global RNG"
    )
    other = load_backbone({"source": "tiny", "seed": 4})
    assert _same_weights(first.model, again.model)
    assert not _same_weights(first.model, other.model)


def test_tiny_backbone_accepts_a_hydra_dictconfig_and_bf16():
    spec = OmegaConf.create({"source": "tiny", "name": "t", "dtype": "bf16", "layers": 1})
    backbone = load_backbone(spec)
    assert isinstance(backbone, Backbone) and backbone.name == "t"
    assert backbone.model.dtype == torch.bfloat16 and backbone.model.config.num_hidden_layers == 1
    assert not backbone.is_vision_language and backbone.processor is None


def test_local_folder_loads_like_a_hub_name(tiny_backbone, tmp_path):
    tiny_backbone.model.save_pretrained(tmp_path)
    tiny_backbone.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone({"source": "hub", "name": str(tmp_path)})
    assert _same_weights(loaded.model, tiny_backbone.model)
    assert loaded.tokenizer.padding_side == "left"


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({"source": "ollama"}, ["model.source", "ollama"]),
        ({"source": "tiny", "dtype": "int3"}, ["model.dtype", "int3"]),
        ({"source": "tiny", "layers": 0}, ["model.layers"]),
        ({"source": "tiny", "hidden_size": 62}, ["model.hidden_size", "model.heads"]),
        ({"source": "tiny", "hidden_size": 60}, ["source=tiny", "head_dim"]),
        ({"source": "hub"}, ["model.name"]),
        ({"source": "hub", "name": "./no/such/folder"}, ["./no/such/folder", "no such folder"]),
        ({"source": "gguf", "gguf_file": "/no/such.gguf"}, ["model.gguf_file", "/no/such.gguf"]),
    ],
)
def test_bad_specs_name_the_key(spec, names):
    with pytest.raises(ModelLoadError) as caught:
        load_backbone(spec)
    for name in names:
        assert name in str(caught.value)


def test_offline_hub_name_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "urlkit-tests/no-such-model-7f3a"
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_backbone({"source": "hub", "name": name})
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    for needed in (name, "offline", "HF_HOME", "model=smollm2_135m"):
        assert needed in message


def test_unreachable_hub_fails_fast_without_the_offline_flag(monkeypatch):
    """No HF_HUB_OFFLINE: the hub is probed once instead of retried for ~25 s. With network the
    made-up name is a quick 404 instead; either way a ModelLoadError naming the model."""
    for var in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    name = "urlkit-tests/no-such-model-7f3a"
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_backbone({"source": "hub", "name": name})
    assert time.perf_counter() - start < 10
    assert name in str(caught.value) and "cannot be reached" in str(caught.value)


def test_vision_specs_are_handed_to_urlkit_vision(monkeypatch):
    seen = []

    def load_vision_backbone(spec):
        seen.append(spec)
        return Backbone(model=None, tokenizer=None, name=spec["name"], is_vision_language=True)

    fake = types.ModuleType("urlkit.model.vision")
    fake.load_vision_backbone = load_vision_backbone
    monkeypatch.setitem(sys.modules, "urlkit.model.vision", fake)
    spec = {"name": "Qwen/Qwen2.5-VL-3B-Instruct", "family": "qwen2_5_vl", "source": "hub"}
    assert load_backbone(spec).is_vision_language
    assert load_backbone({"name": "tiny_vl", "vision": True}).name == "tiny_vl"
    assert [s["name"] for s in seen] == ["Qwen/Qwen2.5-VL-3B-Instruct", "tiny_vl"]
