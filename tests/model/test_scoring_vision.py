"""Reranker on the tiny random Qwen2.5-VL (urlkit.model.vision): images go through the same path."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from urlkit.model.backbone import load_backbone
from urlkit.model.heads import build_head, resolve_token_ids
from urlkit.model.scoring import Reranker
from urlkit.paths import REPO_ROOT

IMAGES = REPO_ROOT / "data" / "emoji" / "images"
DOCUMENTS = [("1f600.png", "Query: a grinning face. Relevant?"), ("2764-fe0f.png", "heart")]


def _prompt(text: str) -> str:
    return f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_vl():
    if not all((IMAGES / name).is_file() for name, _ in DOCUMENTS):
        pytest.skip(f"the emoji images are not built under {IMAGES}")
    return load_backbone({"family": "qwen2_5_vl", "source": "tiny", "name": "tiny_vl"})


def test_image_prompts_score_like_the_full_model_with_multimodal_positions(tiny_vl):
    processor = tiny_vl.processor
    images = [Image.open(IMAGES / name).convert("RGB") for name, _ in DOCUMENTS]
    texts = [_prompt(text) for _, text in DOCUMENTS]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0, "the shorter prompt is left-padded"
    yes_no = resolve_token_ids(tiny_vl.tokenizer, ["yes", "no"])
    reranker = Reranker(tiny_vl, build_head("lm_head", tiny_vl.model, yes_no))
    with torch.no_grad():
        scores = reranker({**batch, "doc_ids": ["d1", "d2"]})
        reference = tiny_vl.model(**batch).logits[:, -1, yes_no]  # uses 3-D rotary positions
        alone = torch.cat(
            [
                reranker(processor(text=[t], images=[i], return_tensors="pt"))
                for t, i in zip(texts, images, strict=True)
            ]
        )
    assert reranker.is_vision_language and scores.shape == (2, 2)
    assert torch.allclose(scores, reference, atol=1e-5)
    assert torch.allclose(scores, alone, atol=1e-5)
