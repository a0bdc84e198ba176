"""Shared-prefix scoring gives the plain pass's scores and gradients with fewer tokens."""

from __future__ import annotations

import pytest
import torch

from urlkit.build import add_lora
from urlkit.data.format import Document, Query
from urlkit.data.prompts import PromptRenderer
from urlkit.model.heads import build_head, resolve_token_ids
from urlkit.model.prefix_sharing import GROUP_PREFIX, PREFIX, prefix_tree
from urlkit.model.scoring import Reranker, ScoringOptions

INSTRUCTION = "Find the passage that answers the query."
QUERIES = [
    Query(id="q1", text="where do cats sleep", qrels={"d1": 1}),
    Query(id="q2", text="tool for cutting wood", qrels={"d2": 1}),
    Query(id="q3", text="where do cats hunt at night", qrels={"d1": 1}),
]
DOCS = [
    Document(id="d1", text="Cats sleep in warm, sheltered places such as sunny windowsills."),
    Document(id="d2", text="A hand saw cuts wood."),
    Document(id="d3", title="Tea", text="Steep green tea leaves in water just below boiling for two minutes."),
    Document(id="d4", text="Rain."),
]


@pytest.fixture
def renderer(tiny_backbone):
    return PromptRenderer(tiny_backbone.tokenizer, max_length=128)


def _rerankers(backbone, **options):
    head = build_head("lm_head", backbone.model, resolve_token_ids(backbone.tokenizer, ["yes", "no"]))
    shared = Reranker(backbone, head, ScoringOptions(share_prefix=True, **options))
    return shared, shared.with_options(share_prefix=False)


def _batch(renderer, pairs):
    return renderer.collate([renderer.encode(INSTRUCTION, QUERIES[q], DOCS[d]) for q, d in pairs])


# one query's candidates (training group), three queries mixed (evaluation batch), a query twice
PAIRS = [[(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 0), (1, 1), (2, 2), (1, 3), (0, 2), (2, 0)], [(1, 1), (1, 1)]]


# 128: continuations packed, the last shared level folded into them; 1: one row per
# continuation, so no level is folded (several rows continue each shared row)
PACK_LENGTHS = pytest.mark.parametrize("pack_length", [128, 1], ids=["packed-folded", "unpacked"])


@PACK_LENGTHS
@pytest.mark.parametrize("pairs", PAIRS, ids=["one-query", "three-queries", "duplicate"])
def test_shared_prefix_scores_equal_the_plain_pass(tiny_backbone, renderer, pairs, pack_length):
    shared, plain = _rerankers(tiny_backbone, pack_length=pack_length)
    batch = _batch(renderer, pairs)
    tree = prefix_tree(batch["input_ids"], batch["attention_mask"])
    assert tree is not None and tree.tokens < 0.7 * tree.plain_tokens, "the prompts share their prefixes"
    assert sorted(torch.cat([packs.prompts for packs in tree.buckets]).tolist()) == list(range(len(pairs)))
    with torch.no_grad():
        assert torch.allclose(shared(batch), plain(batch), atol=1e-5)
        alone = torch.cat([plain(_batch(renderer, [pair])) for pair in pairs])
    assert torch.allclose(shared(batch).detach(), alone, atol=1e-5)


def test_queries_are_grouped_so_each_prefix_is_computed_once(tiny_backbone, renderer):
    batch = _batch(renderer, PAIRS[1])
    tree = prefix_tree(batch["input_ids"], batch["attention_mask"], fold=False)
    common, groups = tree.levels
    assert len(common.input_ids) == 1 and len(groups.input_ids) == 3
    parent = torch.empty(6, dtype=torch.long)  # group row of each prompt, in batch order
    for packs in tree.buckets:
        parent[packs.prompts] = packs.parent[packs.last[:, 0]]
    assert parent[0] == parent[4] and parent[2] == parent[5] and parent[1] == parent[3], "one group per query"
    assert len(set(parent.tolist())) == 3


def test_a_level_continued_by_one_packed_row_per_row_is_folded_into_it(tiny_backbone, renderer):
    # three queries, two candidates each: the query rows open the packed rows (pack_length 20:
    # the whole batch, 194 tokens once shared, is more than one row, ONE_ROW_WIDTH x 20)
    batch = _batch(renderer, PAIRS[1])
    unfolded = prefix_tree(batch["input_ids"], batch["attention_mask"], fold=False, pack_length=20)
    folded = prefix_tree(batch["input_ids"], batch["attention_mask"], pack_length=20)
    assert len(folded.levels) == 1 and len(unfolded.levels) == 2
    rows = torch.cat([packs.input_ids for packs in folded.buckets])
    assert len(rows) == 3
    opening = [packs.segment == PREFIX for packs in folded.buckets]
    assert all(bool(o[:, 0].all()) for o in opening)  # every row opens with a query's prefix
    group_rows = unfolded.levels[1].attention_mask.sum(dim=1).sort().values
    assert torch.cat([o.sum(dim=1) for o in opening]).sort().values.tolist() == group_rows.tolist()
    def real_tokens(tree):
        return sum(int(part.attention_mask.sum()) for part in [*tree.levels, *tree.buckets])

    assert real_tokens(folded) == real_tokens(unfolded)  # nothing computed twice
    # one query's candidates (a training step): one decoder pass, no cache
    batch = _batch(renderer, PAIRS[0])
    tree = prefix_tree(batch["input_ids"], batch["attention_mask"])
    assert tree.levels == [] and len(tree.buckets) == 1 and tree.buckets[0].parent is None
    assert tree.buckets[0].input_ids.shape[0] == 1


def test_a_batch_that_fits_one_wide_row_is_one_decoder_pass(tiny_backbone, renderer):
    # three queries (the common prefix, three group prefixes, six continuations): 254 tokens,
    # one row of at most ONE_ROW_WIDTH x 128; each continuation reads only its own group's prefix
    # (the scores equal the plain pass: test_shared_prefix_scores_equal_the_plain_pass)
    batch = _batch(renderer, PAIRS[1])
    tree = prefix_tree(batch["input_ids"], batch["attention_mask"])
    unfolded = prefix_tree(batch["input_ids"], batch["attention_mask"], fold=False)
    assert tree.levels == [] and len(tree.buckets) == 1
    # wider than a folded pack (FOLD_WIDTH x 40 = 160 tokens), still one row (a 1+16 step)
    narrow = prefix_tree(batch["input_ids"], batch["attention_mask"], pack_length=40)
    assert narrow.levels == [] and len(narrow.buckets) == 1 and narrow.tokens == tree.tokens
    row = tree.buckets[0]
    assert row.parent is None and row.input_ids.shape[0] == 1 and tree.tokens == row.input_ids.numel()
    assert tree.tokens == sum(int(part.attention_mask.sum()) for part in [*unfolded.levels, *unfolded.buckets])
    assert int((row.segment == PREFIX).sum()) == len(unfolded.levels[0].input_ids[0])
    group_prefixes = row.group[row.segment == GROUP_PREFIX].unique()
    assert len(group_prefixes) == 3, "one prefix per query"
    shared, plain = _rerankers(tiny_backbone, pack_length=30)  # 30: not one row, the packed levels
    with torch.no_grad():
        assert torch.allclose(shared.with_options(pack_length=128)(batch), shared(batch), atol=1e-5)


def test_right_padded_batches_and_batches_without_sharing(tiny_backbone, renderer):
    shared, plain = _rerankers(tiny_backbone)
    batch = _batch(renderer, PAIRS[1])
    lengths = batch["attention_mask"].sum(dim=1)
    right = {key: torch.zeros_like(value) for key, value in batch.items()}
    for row, length in enumerate(lengths.tolist()):
        right["input_ids"][row, :length] = batch["input_ids"][row, -length:]
        right["attention_mask"][row, :length] = 1
    with torch.no_grad():
        assert torch.allclose(shared(right), plain(batch), atol=1e-5)
    single = _batch(renderer, [(0, 0)])
    assert prefix_tree(single["input_ids"], single["attention_mask"]) is None
    unrelated = {"input_ids": torch.tensor([[5, 6, 7], [8, 9, 10]]), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    assert prefix_tree(unrelated["input_ids"], unrelated["attention_mask"]) is None


@PACK_LENGTHS
@pytest.mark.parametrize("pairs", PAIRS[:2], ids=["one-query", "three-queries"])
def test_lora_gradients_through_shared_prefixes_equal_the_plain_pass(tiny_backbone, renderer, pairs, pack_length):
    from omegaconf import OmegaConf

    add_lora(tiny_backbone.model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0,
                                                    "target_modules": ["q_proj", "v_proj", "down_proj"]}))
    torch.manual_seed(0)
    for name, parameter in tiny_backbone.model.named_parameters():
        if "lora_B" in name:  # LoRA B starts at zero: make every gradient non-trivial
            parameter.data.normal_(0, 0.05)
    shared, plain = _rerankers(tiny_backbone, pack_length=pack_length)
    batch = _batch(renderer, pairs)
    weights = torch.randn(len(pairs), 2)

    def gradients(reranker):
        reranker.zero_grad(set_to_none=True)
        (reranker(batch) * weights).sum().backward()
        return {n: p.grad.clone() for n, p in reranker.named_parameters() if p.grad is not None}

    one, other = gradients(shared), gradients(plain)
    assert one.keys() == other.keys() and len(one) == 12
    for name in one:
        assert one[name].abs().max() > 0, name
        assert torch.allclose(one[name], other[name], atol=1e-5, rtol=1e-4), name


def test_rerank_split_batches_queries_together_and_scores_as_alone(tiny_backbone, renderer, tmp_path):
    from helpers.run_helpers import first_documents_ranking, write_small_dataset

    from urlkit.data.loaders import load_split
    from urlkit.evaluation.rerank import rerank_split
    from urlkit.loss import relevance

    split = load_split(write_small_dataset(tmp_path / "data"), "test")
    ranking = first_documents_ranking(split, 5)
    shared, plain = _rerankers(tiny_backbone)
    run = rerank_split(shared, renderer, split, ranking, depth=5, batch_size=7, progress=False)
    assert sum(map(len, run.values())) == 5 * len(split.queries)
    with torch.no_grad():
        for query in split.queries:
            for doc_id, score in run[query.id].items():
                alone = plain(renderer.collate([renderer.encode(split.instruction, query, split.corpus[doc_id])]))
                assert score == pytest.approx(relevance(alone, "sft").item(), abs=1e-5)


def test_by_default_evaluation_on_a_gpu_runs_the_padded_batch_and_training_shares(tiny_backbone, renderer, monkeypatch):
    head = build_head("lm_head", tiny_backbone.model, resolve_token_ids(tiny_backbone.tokenizer, ["yes", "no"]))
    default = Reranker(tiny_backbone, head)
    forced = default.with_options(share_prefix=True)
    batch = _batch(renderer, PAIRS[1])
    assert default.eval()._can_share(batch) and default.train()._can_share(batch)  # on the CPU, both
    for reranker in (default, forced):
        monkeypatch.setattr(reranker, "model_device", lambda: torch.device("cuda"))
    assert not default.eval()._can_share(batch), "evaluation on a GPU: one padded pass (launch-bound levels)"
    assert default.train()._can_share(batch)
    assert forced.eval()._can_share(batch) and not default.with_options(share_prefix=False).train()._can_share(batch)
