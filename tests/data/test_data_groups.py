"""Training groups: positive first, N negatives, padding mask, collate and scatter-back."""

from __future__ import annotations

import pytest
import torch
from helpers.data_builders import jsonl_dataset, smollm2_tokenizer
from torch.utils.data import DataLoader

import urlkit.data
from urlkit.data import (
    DataError,
    GroupCollator,
    PromptRenderer,
    TrainGroups,
    first_stage,
    load_split,
    scatter_scores,
)


@pytest.fixture
def split(tmp_path):
    return load_split(jsonl_dataset(tmp_path, info={"instruction": "Find it."}), "train")


@pytest.fixture
def ranking(split, tmp_path):
    return first_stage(split, "bm25", k=8, cache_dir=tmp_path / "cache")


def test_items_put_the_positive_first_and_pad_short_groups(split, ranking):
    groups = TrainGroups(split, ranking, n_negatives=4, seed=3)
    assert len(groups) == 3 and groups.padded_queries == 1
    for item, query in zip(groups, split.queries, strict=True):
        assert item["query_id"] == query.id and len(item["doc_ids"]) == 5
        assert item["doc_ids"][0] in query.positives
        assert not set(item["doc_ids"][1:]) & set(query.positives)
        assert item["mask"].dtype == torch.bool
    pooled = groups[2]  # q3: pool d3 d4 d7 with positive d4 -> two negatives
    assert pooled["doc_ids"][0] == "d4" and sorted(pooled["doc_ids"][1:3]) == ["d3", "d7"]
    assert pooled["doc_ids"][3:] == ["", ""]
    assert pooled["mask"].tolist() == [True, True, True, False, False]
    assert groups[0]["mask"].all()
    assert "1 queries have fewer negatives and are padded" in groups.report()


def test_groups_are_redrawn_per_epoch_and_reproducible(split, ranking):
    groups = TrainGroups(split, ranking, n_negatives=3, seed=0)
    epoch0 = [groups[i]["doc_ids"] for i in range(len(groups))]
    assert [groups[i]["doc_ids"] for i in range(len(groups))] == epoch0
    positives, negatives = set(), []
    for epoch in range(1, 30):
        groups.set_epoch(epoch)
        positives.add(groups[0]["doc_ids"][0])  # q1 has positives d1 and d5
        negatives.append(groups[0]["doc_ids"][1:])
    assert positives == {"d1", "d5"}
    assert len({tuple(n) for n in negatives}) > 1
    groups.set_epoch(0)
    assert [groups[i]["doc_ids"] for i in range(len(groups))] == epoch0
    other_seed = TrainGroups(split, ranking, n_negatives=3, seed=1)
    assert [other_seed[i]["doc_ids"] for i in range(3)] != epoch0


def test_a_query_without_any_possible_negative_is_an_error(tmp_path):
    one_doc = load_split(
        jsonl_dataset(tmp_path / "tiny", corpus=[{"id": "d1", "text": "alone"}],
                      train=[{"id": "q1", "text": "t", "positives": ["d1"]}],
                      info={"name": "tiny"}),
        "train",
    )
    with pytest.raises(DataError, match="tiny/train is too small for 4 negatives.*'q1'"):
        TrainGroups(one_doc, None, n_negatives=4)
    assert TrainGroups(one_doc, None, n_negatives=0)[0]["doc_ids"] == ["d1"]


def test_a_split_with_no_query_to_train_on_is_an_error_not_a_division_by_zero(tmp_path):
    """BEIR with data.on_error=skip and a corpus that does not go with the qrels: every query
    judges only absent documents, so none trains; the stream divided by zero groups."""
    from helpers.data_builders import beir_dataset

    root = beir_dataset(tmp_path, corpus=[{"_id": "x1", "text": "cats"}, {"_id": "x2", "text": "dogs"}])
    split = load_split(root, "train", on_error="skip")
    assert [q.id for q in split.queries] == ["q3"] and not split.queries[0].positives
    with pytest.raises(DataError, match=r"/train has no query to train on: all its 1 queries judge only"):
        TrainGroups(split, None, n_negatives=4)


def test_collator_renders_real_documents_in_row_major_mask_order(split, ranking):
    renderer = PromptRenderer(smollm2_tokenizer(), max_length=128)
    groups = TrainGroups(split, ranking, n_negatives=4, seed=5)
    items = [groups[2], groups[0]]  # a padded group first
    batch = GroupCollator(renderer, split)(items)
    mask = batch["mask"]
    assert mask.shape == (2, 5) and int(mask.sum()) == 8
    assert batch["prompts"]["input_ids"].shape[0] == 8
    queries = {q.id: q for q in split.queries}
    expected = [
        renderer.encode("Find it.", queries[item["query_id"]], split.corpus[doc_id]).input_ids
        for item in items for doc_id, real in zip(item["doc_ids"], item["mask"], strict=True) if real
    ]
    lengths = batch["prompts"]["attention_mask"].sum(dim=1).tolist()
    got = [row[-n:].tolist() for row, n in zip(batch["prompts"]["input_ids"], lengths, strict=True)]
    assert got == expected
    assert batch["query_ids"] == ["q3", "q1"] and batch["doc_ids"][0][-1] == ""

    loader = DataLoader(groups, batch_size=2, collate_fn=GroupCollator(renderer, split))
    assert [b["mask"].shape[0] for b in loader] == [2, 1]


def test_scatter_scores_puts_rows_back_with_zeros_at_padding():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    scores = torch.arange(10, dtype=torch.float32).reshape(5, 2).requires_grad_()
    grouped = scatter_scores(scores, mask)
    assert grouped.shape == (2, 3, 2)
    assert torch.equal(grouped[0, 2], torch.zeros(2))
    assert torch.equal(grouped[mask], scores)
    assert torch.equal(grouped[1, 0], scores[2])
    grouped.sum().backward()
    assert torch.equal(scores.grad, torch.ones(5, 2))
    with pytest.raises(ValueError, match="4 score rows for 5 real documents"):
        scatter_scores(scores[:4], mask)


def test_every_exported_name_resolves():
    for name in urlkit.data.__all__:
        assert getattr(urlkit.data, name) is not None
    with pytest.raises(AttributeError):
        urlkit.data.no_such_name  # noqa: B018
