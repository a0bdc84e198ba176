"""The tiny Llama reranker with LoRA that the fused-pass and attention tests score and train,
and the scores and LoRA gradients they compare."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from helpers.device import on_test_device
from urlkit.build import add_lora
from urlkit.data.prompts import PromptRenderer
from urlkit.model.backbone import load_backbone
from urlkit.model.heads import build_head, resolve_token_ids
from urlkit.model.scoring import Reranker

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_reranker(targets=ALL_PROJECTIONS, dtype=torch.float32, dropout=0.0, device=None):
    """(reranker, renderer): the tiny Llama, LoRA (r=4) on ``targets`` with B drawn from
    N(0, 0.05) so the adapters matter, the yes/no head; on ``device`` (default: the test device)."""
    backbone = load_backbone({"source": "tiny", "name": "tiny_llama", "seed": 0, "dtype": dtype})
    torch.manual_seed(0)
    add_lora(backbone.model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": dropout, "target_modules": targets}))
    for name, parameter in backbone.model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapters matter
            parameter.data.normal_(0, 0.05)
    head = build_head("lm_head", backbone.model, resolve_token_ids(backbone.tokenizer, ["yes", "no"]))
    renderer = PromptRenderer(backbone.tokenizer, max_length=128)
    reranker = Reranker(backbone, head)
    return (reranker.to(device) if device else on_test_device(reranker)), renderer


def scores_and_gradients(reranker, batch):
    """The scores of ``batch`` and the gradients of the trainable parameters of a weighted sum of them."""
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    scores = reranker(batch)
    weights = torch.linspace(-1, 1, scores.numel(), device=scores.device).view_as(scores)
    return scores.detach(), torch.autograd.grad((scores * weights).sum(), trainable)
