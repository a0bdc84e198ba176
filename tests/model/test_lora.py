"""Evaluation scores with LoRA folded into the weights (urlkit.model.lora.lora_merged): the same
scores as the unmerged adapters, and the exact original weights afterwards."""

from __future__ import annotations

import pytest
import torch
from helpers.run_helpers import compose_train, first_documents_ranking, write_small_dataset

from urlkit.build import build_reranker, load_data_split
from urlkit.evaluation.rerank import rerank_split
from urlkit.model.lora import lora_layers, lora_merged


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = write_small_dataset(tmp_path_factory.mktemp("lora") / "data")
    cfg = compose_train(data, "model.lora.dropout=0.1")
    built = build_reranker(cfg, trainable=True)
    torch.manual_seed(0)
    with torch.no_grad():  # adapters as after training: B != 0 (peft initialises B to zero)
        for name, parameter in built.reranker.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    split = load_data_split(cfg.data, "test")
    ranking = first_documents_ranking(split, 5)  # 5 pairs a query (BM25 has fewer for some)
    return built, split, ranking


def _base_weights(reranker) -> list[torch.Tensor]:
    return [layer.get_base_layer().weight.detach().clone() for layer in lora_layers(reranker)]


def test_merged_scores_equal_unmerged_and_the_weights_come_back_bit_for_bit(setup):
    built, split, ranking = setup
    reranker = built.reranker
    reranker.train()  # as during training: evaluation must leave the mode as it found it
    before = _base_weights(reranker)
    unmerged = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=False)
    merged = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=True)
    differences = [abs(merged[q][d] - unmerged[q][d]) for q in unmerged for d in unmerged[q]]
    assert len(differences) > 10 and max(differences) < 1e-4
    assert reranker.training
    after = _base_weights(reranker)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert not any(layer.merged for layer in lora_layers(reranker))


def test_the_adapters_change_the_scores(setup):
    """Otherwise merged == unmerged would prove nothing."""
    built, split, ranking = setup
    reranker = built.reranker
    with_adapters = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False)
    saved = {n: p.detach().clone() for n, p in reranker.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():
            for name, parameter in reranker.named_parameters():
                if "lora_B" in name:
                    parameter.zero_()
        without = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False)
    finally:
        with torch.no_grad():
            for name, parameter in reranker.named_parameters():
                if name in saved:
                    parameter.copy_(saved[name])
    assert max(abs(with_adapters[q][d] - without[q][d]) for q in without for d in without[q]) > 1e-3


def test_an_error_inside_the_block_still_restores_the_weights(setup):
    built, _, _ = setup
    before = _base_weights(built.reranker)
    with pytest.raises(RuntimeError, match="boom"), lora_merged(built.reranker) as merged:
        assert merged == len(before) > 0
        assert any(layer.merged for layer in lora_layers(built.reranker))
        raise RuntimeError("boom")
    assert all(torch.equal(a, b) for a, b in zip(_base_weights(built.reranker), before, strict=True))
    assert not any(layer.merged for layer in lora_layers(built.reranker))


def test_bfloat16_base_weights_merge_within_bfloat16_rounding_and_come_back(setup):
    """Low-precision weights merge too (W + s B A summed in float32, rounded once): inside
    the block every layer is merged, the scores stay within bf16 rounding of the float32
    model's, and the exact bf16 weights come back."""
    built, split, ranking = setup
    reranker = built.reranker
    reference = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=False)
    layers = lora_layers(reranker)
    frozen = [p for p in reranker.decoder.parameters() if not p.requires_grad and p.is_floating_point()]
    originals = [p.data for p in frozen]  # as model.dtype=bfloat16: frozen weights bf16, adapters float32
    for parameter in frozen:
        parameter.data = parameter.data.to(torch.bfloat16)
    try:
        before = _base_weights(reranker)
        with lora_merged(reranker) as merged:
            assert merged == len(layers)
            assert all(layer.merged for layer in layers)
            assert not all(torch.equal(a, b) for a, b in zip(_base_weights(reranker), before, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(_base_weights(reranker), before, strict=True))
        assert not any(layer.merged for layer in layers)
        merged_bf16 = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=True)
    finally:
        for parameter, original in zip(frozen, originals, strict=True):
            parameter.data = original
    scale = max(abs(v) for q in reference for v in reference[q].values())
    differences = [abs(merged_bf16[q][d] - reference[q][d]) for q in reference for d in reference[q]]
    assert len(differences) > 10 and max(differences) < 0.05 * scale


def test_a_layer_with_a_lora_bias_is_left_unmerged_and_scores_stay_equal(setup):
    """``s B A`` alone would drop the bias of a LoRA-bias layer (peft adds it to the base
    bias when it merges): such a layer is scored unmerged instead."""
    built, split, ranking = setup
    reranker = built.reranker
    layers = lora_layers(reranker)
    lora_b = layers[0].lora_B["default"]
    lora_b.bias = torch.nn.Parameter(torch.full((lora_b.out_features,), 0.5))
    try:
        unmerged = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=False)
        with lora_merged(reranker) as merged:
            assert merged == len(layers) - 1 and not layers[0].merged
        merged_scores = rerank_split(reranker, built.renderer, split, ranking, depth=5, progress=False, merge_lora=True)
    finally:
        lora_b.bias = None
    differences = [abs(merged_scores[q][d] - unmerged[q][d]) for q in unmerged for d in unmerged[q]]
    assert len(differences) > 10 and max(differences) < 1e-4
