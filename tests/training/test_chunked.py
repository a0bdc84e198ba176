"""The constant-memory step: scoring in chunks gives the one-pass gradient."""

from __future__ import annotations

import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.build import build_reranker, load_data_split
from urlkit.data.candidates import first_stage
from urlkit.data.groups import GroupCollator, TrainGroups
from urlkit.loss import url_loss
from urlkit.training.module import url_backward


@pytest.mark.parametrize("weight,direction,negatives", [("sft", "sft", 4), ("cl", "rand", 13), ("base*sft", "cl", 6)])
def test_chunked_gradient_equals_one_pass(tmp_path, weight, direction, negatives):
    data = write_small_dataset(tmp_path / "data")
    cfg = compose_train(data, f"direction={direction}", f"data.n_negatives={negatives}", "head.trainable=true")
    split = load_data_split(cfg.data, "train")
    built = build_reranker(cfg, sample=split)
    torch.manual_seed(0)
    for name, p in built.reranker.named_parameters():  # LoRA B starts at 0: make every grad non-trivial
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    groups = TrainGroups(split, first_stage(split, "bm25", k=20, cache=False), negatives, seed=0)
    items = [groups[0], groups[1]]
    if negatives > 11:  # 12 documents: groups of 1 + 13 are padded
        assert not items[0]["mask"].all()

    def loss_fn(logits, mask):
        return url_loss(logits, weight=weight, direction=direction, mask=mask)

    def gradients(chunk_size):
        built.reranker.zero_grad(set_to_none=True)
        batch = GroupCollator(built.renderer, split, chunk_size)(items)
        logits, loss, _ = url_backward(built.reranker, batch, loss_fn, scale=0.5, chunked=chunk_size is not None)
        grads = {n: p.grad.clone() for n, p in built.reranker.named_parameters() if p.grad is not None}
        return logits, loss, grads

    logits_one, loss_one, one_pass = gradients(None)
    logits_chunked, loss_chunked, chunked = gradients(3)
    assert torch.allclose(logits_one, logits_chunked, atol=1e-5)
    assert loss_one.item() == pytest.approx(loss_chunked.item(), abs=1e-6)
    assert one_pass.keys() == chunked.keys() and len(one_pass) > 2
    for name in one_pass:
        scale = one_pass[name].abs().max().item()
        assert scale > 0, name
        assert torch.allclose(one_pass[name], chunked[name], atol=1e-5 * max(1.0, scale), rtol=1e-4), name
