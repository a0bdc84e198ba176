"""The embedded SmolLM2 backbone: GGUF converted once, cached, faithful; the cache's lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from urlkit.model.backbone import load_backbone
from urlkit.model.gguf_cache import CacheBuildError, cached_directory, converted_model, smollm2_gguf

BUILDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from urlkit.model.gguf_cache import cached_directory

    final, builds = Path(sys.argv[1]), Path(sys.argv[2])

    def build(staging):
        with open(builds, "a") as log:
            log.write(f"{os.getpid()}\\n")
        (staging / "part1").write_text("half")
        time.sleep(1.0)  # long enough for the other process to arrive while we build
        (staging / "part2").write_text("done")

    folder = cached_directory(final, build)
    print((folder / "part1").read_text(), (folder / "part2").read_text())
    """
)


def test_two_processes_building_at_once_end_with_one_valid_cache(tmp_path):
    final, builds = tmp_path / "models" / "key" / "model", tmp_path / "builds.log"
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(final), str(builds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=60)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    assert outputs == ["half done", "half done"]
    assert len(builds.read_text().split()) == 1, "exactly one process must have built the folder"
    assert sorted(p.name for p in final.parent.iterdir()) == [".lock", "model"], (
        "no temporary folder left"
    )


def test_a_failed_build_leaves_nothing_and_a_stale_temp_is_swept(tmp_path):
    final = tmp_path / "key" / "model"
    final.parent.mkdir()
    (final.parent / ".model.tmp-killed").mkdir()  # what a builder killed mid-way leaves

    def broken(staging: Path) -> None:
        (staging / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(CacheBuildError, match="disk full") as caught:
        cached_directory(final, broken)
    assert str(final) in str(caught.value)
    assert sorted(p.name for p in final.parent.iterdir()) == [".lock"]

    built = cached_directory(final, lambda staging: (staging / "ok").write_text("y"))
    assert (built / "ok").read_text() == "y"
    assert cached_directory(final, broken) == final, "an existing folder is never rebuilt"


def test_cached_load_is_faster_than_the_conversion(smollm2_backbone):
    folder = converted_model()
    record = json.loads((folder / "conversion.json").read_text())
    assert record["gguf_file"] == str(smollm2_gguf())
    start = time.perf_counter()
    cached = load_backbone({"source": "gguf"})
    cached_seconds = time.perf_counter() - start
    print(f"conversion {record['conversion_seconds']:.1f} s, cached load {cached_seconds:.2f} s")
    assert cached_seconds < record["conversion_seconds"] / 3
    reference = smollm2_backbone.model.state_dict()
    assert all(
        torch.equal(tensor, reference[name]) for name, tensor in cached.model.state_dict().items()
    )


def test_cached_weights_equal_the_gguf_tensors(smollm2_backbone):
    """Read the GGUF file independently of transformers (the gguf library's dequantiser) and
    compare tensor by tensor. Q/K are permuted by llama.cpp's converter and are checked by the
    next test instead; the first and last blocks suffice (the reader's parse costs seconds)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    per_block = {
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
        "ffn_down": "mlp.down_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    }  # fmt: skip
    last = smollm2_backbone.model.config.num_hidden_layers - 1
    ours = smollm2_backbone.model.state_dict()
    compared = 0
    for tensor in GGUFReader(smollm2_gguf()).tensors:
        parts = tensor.name.split(".")
        if parts[0] == "blk" and int(parts[1]) in (0, last) and parts[2] in per_block:
            name = f"model.layers.{parts[1]}.{per_block[parts[2]]}.weight"
        elif tensor.name in ("token_embd.weight", "output_norm.weight"):
            name = {
                "token_embd.weight": "model.embed_tokens.weight",
                "output_norm.weight": "model.norm.weight",
            }[tensor.name]
        else:
            continue
        expected = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())
        assert torch.equal(ours[name], expected.reshape(ours[name].shape)), name
        compared += 1
    assert compared == 2 + 2 * len(per_block)
    # the LM head is the (tied) embedding matrix, as in SmolLM2
    assert torch.equal(ours["lm_head.weight"], ours["model.embed_tokens.weight"])


def test_converted_model_is_a_working_language_model(smollm2_backbone):
    tokenizer, model = smollm2_backbone.tokenizer, smollm2_backbone.model
    batch = tokenizer(
        ["The capital of France is", "One, two, three, four,"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    assert tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist()) == ["ĠParis", "Ġfive"]


def test_the_gguf_chat_template_is_smollm2s(smollm2_backbone):
    tokenizer = smollm2_backbone.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is the sky blue?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nIs the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    )
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    assert encoded["input_ids"] == tokenizer(prompt.replace("Is the sky blue?", "hi"))["input_ids"]
    assert encoded["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
