"""No training negative is a document the dev or test queries judge: one corpus serves every
split (emoji, wordsense, BEIR, an M-BEIR pool), so "random from the corpus" and the first
stage's top-k reached the test's answers (urlkit.data.loaders.judged_documents, Split.held_out)."""

from __future__ import annotations

import pytest
from helpers.data_builders import beir_dataset, mbeir_tree, write_jsonl
from helpers.run_helpers import compose_train

from urlkit.data import load_split
from urlkit.data.groups import TrainGroups


def _judged(path, *splits, **kw) -> set[str]:
    """Every doc id the queries of ``splits`` judge, any grade, from their fully loaded splits."""
    return {d for s in splits for q in load_split(path, s, **kw).queries for d in q.judgements}


def _negatives(groups: TrainGroups, epochs: int) -> list[str]:
    drawn = []
    for epoch in range(epochs):
        groups.set_epoch(epoch)
        for i in range(len(groups)):
            item = groups[i]
            drawn += [d for d, real in zip(item["doc_ids"][1:], item["mask"][1:].tolist(), strict=True) if real]
    return drawn


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dataset", ["emoji_t2i", "emoji_i2t"])
def test_emoji_random_negatives_from_the_corpus_are_never_dev_or_test_documents(dataset):
    from urlkit.build import training_workload

    cfg = compose_train(None, f"data={dataset}", "data.random_from=corpus", "data.n_negatives=8")
    workload = training_workload(cfg)
    held_out = _judged(cfg.data.path, "dev", "test")
    assert len(held_out) > 300  # a tenth of the emoji each: the pictures (names) of dev and test
    drawn = _negatives(workload.groups, epochs=2)
    assert len(drawn) > 10_000 and not set(drawn) & held_out
    assert f"{len(held_out)} documents judged by the dev and test queries held out" in workload.split.report()
    assert f"{len(held_out)} documents judged by dev or test queries are never negatives" in workload.groups.report()


@pytest.mark.timeout(60)
def test_beir_hard_negatives_from_bm25_are_never_test_documents(tmp_path):
    """BEIR: one corpus, qrels per split. The training query's BM25 top ranks the test query's
    answer ("wood"); it is never its negative, hard or random, and the others still are."""
    from urlkit.build import training_workload

    root = beir_dataset(tmp_path / "beir", qrels="query-id\tcorpus-id\tscore\nq1\td7\t1\nq2\td2\t0\n")
    for random_from in ("pool", "corpus"):
        cfg = compose_train(root, "data=beir", f"data.path={root}", f"data.random_from={random_from}",
                            "data.hard_fraction=1.0", "data.n_negatives=6")
        workload = training_workload(cfg)
        assert "d7" in [d for d, _ in workload.ranking["q3"]]  # BM25: "cutting wood" -> drills, wood
        drawn = set(_negatives(workload.groups, epochs=20))
        assert drawn == set(workload.split.corpus) - {"d4", "d7", "d2"}  # d2: judged, grade 0


@pytest.mark.timeout(60)
def test_mbeir_training_on_a_pool_that_holds_the_test_candidates_never_draws_their_answers(tmp_path):
    """An M-BEIR training pool that also holds the val and test candidates (the task's local
    pool, or one file for all): random negatives from it never are a val or test positive."""
    from urlkit.build import load_data_split

    root = mbeir_tree(tmp_path / "M-BEIR")
    local = root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl"
    training = root / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl"
    both = write_jsonl(tmp_path / "both_cand_pool.jsonl", [
        line for path in (local, training) for line in path.read_text().splitlines()])
    cfg = compose_train(root, "data=mbeir", f"data.path={root}", "data.dataset=toy_task7",
                        f"data.pool.train={both}", "data.random_from=corpus")
    split = load_data_split(cfg.data, cfg.data.train_split)
    held_out = _judged(root, "val", "test", dataset="toy_task7")
    assert held_out and held_out <= set(split.corpus)
    drawn = _negatives(TrainGroups(split, None, n_negatives=4, random_from="corpus"), epochs=10)
    assert drawn and not set(drawn) & held_out
