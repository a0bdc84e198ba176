"""A reranker score that is NaN or inf is ranked last and said, never sorted anywhere."""

from __future__ import annotations

import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

import urlkit.evaluation.rerank as rerank
from urlkit.build import build_reranker, load_data_split
from urlkit.data.candidates import first_stage
from urlkit.evaluation.metrics import per_query_metrics

pytestmark = pytest.mark.timeout(300)


def test_nonfinite_scores_rank_last_below_every_finite_one(capsys):
    scores = torch.tensor([0.3, float("nan"), -2.0, float("inf"), 1.0])
    rerank._rank_nonfinite_last(scores, ["a", "a", "b", "b", "b"], "data/test")
    assert torch.isfinite(scores).all() and scores[1] < -2.0 and scores[3] < -2.0
    err = capsys.readouterr().err
    assert "data/test: 2 of 5 reranker scores were not finite (NaN or inf), in 2 queries (e.g. a, b)" in err
    # a NaN-scored positive is not first: trec_eval on the rewritten scores puts it last
    run = {"q": {"pos": float("nan"), "neg": 0.5}}
    values = torch.tensor(list(run["q"].values()))
    rerank._rank_nonfinite_last(values, ["q", "q"], "x")
    run["q"] = dict(zip(run["q"], values.tolist(), strict=True))
    assert per_query_metrics({"q": {"pos": 1}}, run).loc["q", "mrr@10"] == 0.5


def test_a_model_scoring_nan_is_said_and_its_queries_keep_the_first_stage_order(tmp_path, monkeypatch, capsys):
    data = write_small_dataset(tmp_path / "data")
    cfg = compose_train(data)
    built = build_reranker(cfg)
    split = load_data_split(cfg.data, "test")
    ranking = first_stage(split, cfg.data.retriever, k=5, run_file=None)
    monkeypatch.setattr(rerank, "_relevance", lambda model, batch, direction: torch.full((len(batch["input_ids"]),), float("nan")))
    run = rerank.rerank_split(built.reranker, built.renderer, split, ranking, depth=5, progress=False)
    for query in split.queries:
        ranked = [d for d, _ in ranking[query.id][:5]]
        order = sorted(run[query.id], key=lambda d: (-run[query.id][d], ranked.index(d)))
        assert order == ranked and all(s == s for s in run[query.id].values())  # finite, first-stage order
    assert "EVERY score was: the metrics are the first stage's order" in capsys.readouterr().err
