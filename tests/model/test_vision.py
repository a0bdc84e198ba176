"""Vision-language backbones: the tiny random Qwen2.5-VL, its processor, the hub path, errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from urlkit.model.backbone import Backbone, ModelLoadError, load_backbone
from urlkit.model.vision import load_vision_backbone, require_processor
from urlkit.paths import REPO_ROOT

IMAGES = REPO_ROOT / "data" / "emoji" / "images"
GRINNING, RED_HEART = IMAGES / "1f600.png", IMAGES / "2764-fe0f.png"
TINY = {"family": "qwen2_5_vl", "source": "tiny", "name": "tiny_vl"}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(TINY)


def _image_prompt(text: str) -> str:
    return ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>" + text
            + "<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_is_the_real_model_class_with_qwens_tokenizer(tiny):
    from transformers import Qwen2_5_VLForConditionalGeneration

    assert isinstance(tiny, Backbone) and tiny.is_vision_language and tiny.name == "tiny_vl"
    assert isinstance(tiny.model, Qwen2_5_VLForConditionalGeneration)
    config, tokenizer = tiny.model.config, tiny.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id == 151655
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_end|>") == config.vision_end_token_id
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|endoftext|>"
    assert config.text_config.vocab_size == len(tokenizer)
    ids = tokenizer.encode("grinning face")  # real BPE merges: fewer tokens than words' letters
    assert len(ids) <= 4 and tokenizer.decode(ids) == "grinning face"


def test_tiny_is_seeded_without_touching_the_global_rng(tiny):
    state = torch.random.get_rng_state()
    again, other = load_vision_backbone(TINY), load_vision_backbone({**TINY, "seed": 1})
    assert torch.equal(torch.random.get_rng_state(), state)
    weights = [dict(b.model.named_parameters()) for b in (tiny, again, other)]
    name = "model.visual.patch_embed.proj.weight"
    assert torch.equal(weights[0][name], weights[1][name])
    assert not torch.equal(weights[0][name], weights[2][name])


def test_chat_template_writes_qwen_vl_chatml_with_image_items(tiny):
    items = [{"type": "text", "text": "Query: "}, {"type": "image"}, {"type": "text", "text": "cat"}]
    text = tiny.processor.apply_chat_template(
        [{"role": "system", "content": "Judge."}, {"role": "user", "content": items}],
        tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\nQuery: "
                    "<|vision_start|><|image_pad|><|vision_end|>cat<|im_end|>\n"
                    "<|im_start|>assistant\n")
    text = tiny.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n")


def test_processor_turns_a_56_pixel_emoji_into_four_image_tokens(tiny):
    inputs = tiny.processor(text=[_image_prompt("grinning face")],
                            images=[Image.open(GRINNING).convert("RGB")], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]  # 56 / 14 = 4 patches a side
    assert inputs["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
    assert int((inputs["input_ids"] == 151655).sum()) == 16 // 2**2


def test_forward_and_backward_on_real_images_reach_the_vision_tower(tiny):
    images = [Image.open(path).convert("RGB") for path in (GRINNING, RED_HEART)]
    inputs = tiny.processor(text=[_image_prompt("grinning face"), _image_prompt("red heart")],
                            images=images, return_tensors="pt", padding=True)
    model = tiny.model
    model.zero_grad()
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    assert hidden.shape == (*inputs["input_ids"].shape, model.config.text_config.hidden_size)
    yes_no = model.lm_head(hidden[:, -1])[:, tiny.tokenizer.convert_tokens_to_ids(["yes", "no"])]
    torch.nn.functional.cross_entropy(yes_no, torch.tensor([0, 1])).backward()
    vision_grad = model.model.visual.patch_embed.proj.weight.grad
    text_grad = model.model.language_model.layers[0].self_attn.q_proj.weight.grad
    assert vision_grad is not None and vision_grad.abs().sum() > 0
    assert text_grad is not None and torch.isfinite(text_grad).all()
    model.zero_grad()


def test_hub_path_loads_a_checkpoint_folder_with_its_processor(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = load_backbone({"family": "qwen2_5_vl", "source": "hub", "name": str(tmp_path),
                            "min_pixels": 28 * 28, "max_pixels": 28 * 28 * 64})
    assert loaded.is_vision_language and loaded.tokenizer.padding_side == "left"
    for (name, saved), (_, reread) in zip(tiny.model.state_dict().items(),
                                          loaded.model.state_dict().items(), strict=True):
        assert torch.equal(saved, reread), name
    size = loaded.processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (784, 50176)
    # min_pixels = 28 x 28: the emoji keeps its 56 x 56 pixels; a 300 x 300 picture is
    # shrunk under max_pixels (64 tokens at most).
    big = Image.open(GRINNING).convert("RGB").resize((300, 300))
    grid = loaded.processor.image_processor(images=[big], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 64


def test_a_checkpoint_without_an_image_processor_is_a_clear_error(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="has no image processor"):
        load_vision_backbone({"source": "hub", "name": str(tmp_path)})


def test_a_vision_language_backbone_without_processor_is_refused(tiny):
    bare = Backbone(model=tiny.model, tokenizer=tiny.tokenizer, name="bare",
                    is_vision_language=True)
    with pytest.raises(ModelLoadError, match="'bare' has no processor"):
        require_processor(bare)
    assert require_processor(tiny) is tiny.processor


def test_an_uncached_hub_model_offline_says_so_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"(?s)offline.*hf download .*model=tiny_vl"):
        load_vision_backbone({"source": "hub", "name": "Qwen/Qwen2.5-VL-3B-Instruct"})


@pytest.mark.parametrize(("spec", "message"), [
    ({"source": "gguf"}, "source='gguf'"),
    ({"source": "tiny", "hidden_size": 100}, "divisible by 4 \\* model.heads"),
    ({"source": "tiny", "min_pixels": 5000, "max_pixels": 4000}, "min_pixels <= max_pixels"),
    ({"source": "hub", "name": "./no/such/folder"}, "no such folder"),
])
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_vision_backbone(spec)
