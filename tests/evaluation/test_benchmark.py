"""Benchmark suites: ``python -m urlkit.evaluate benchmark=<suite>``, one table, one CSV, resumable."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from urlkit.config import register_resolvers
from urlkit.errors import ConfigError
from urlkit.evaluation.benchmark import run_suite, suite_entries, suite_table
from urlkit.paths import REPO_ROOT


def _evaluate(out_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", "benchmark=embedded", "model=tiny", "max_queries=4", "depth=5",
         "batch_size=8", f"hydra.run.dir={out_dir}", *args],
        capture_output=True, text=True, timeout=280, cwd=REPO_ROOT,
    )  # fmt: skip


def test_embedded_suite_in_one_call_then_resumed_per_dataset(tmp_path):
    out_dir = tmp_path / "eval"
    first = _evaluate(out_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "benchmark embedded: 2 datasets" in first.stdout and "Table 4 layout" in first.stdout
    assert "T2T_2" in first.stdout and "all_2" in first.stdout
    table = pd.read_csv(out_dir / "benchmark.csv")
    assert list(table["row"]) == ["dataset", "dataset", "category", "all"]
    assert list(table["dataset"][:2]) == ["wordsense", "manpages"] and {"bm25", "tiny"} <= set(table.columns)
    for name, row in zip(("wordsense", "manpages"), table.itertuples(), strict=False):
        for model in ("bm25", "tiny"):  # the table is the mean of the per-query file, x100
            per_query = pd.read_csv(out_dir / "per_query" / f"{name}_test_{model}.csv")
            assert len(per_query) == 4
            assert getattr(row, model) == pytest.approx(100 * per_query["ndcg@10"].mean(), abs=0.006)
    datasets = table[table["row"] == "dataset"]
    assert table.loc[2, "tiny"] == pytest.approx(datasets["tiny"].mean(), abs=0.01)  # T2T = mean of its 2

    (out_dir / "benchmark" / "manpages.json").unlink()  # as if killed before manpages finished
    again = _evaluate(out_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "wordsense: read back" in again.stdout and "manpages: read back" not in again.stdout
    assert "manpages/test [T2T]" in again.stdout and "wordsense/test [T2T]" not in again.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out_dir / "benchmark.csv"), table)


def _suite(*overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_entries_merge_the_data_group_the_suite_and_the_entry():
    cfg = _suite("benchmark=beir", "benchmark.root=/data/beir", "data.n_negatives=7")
    entries = suite_entries(cfg.benchmark, cfg.data)
    assert len(entries) == 14 and entries[0].name == "trec-covid"
    assert str(entries[0].data.path) == "/data/beir/trec-covid" and entries[0].data.n_negatives == 7
    msmarco = entries[-1]
    assert msmarco.split == "dev" and msmarco.metric == "ndcg@10" and msmarco.data.name == "msmarco"
    mrb = _suite("benchmark=mrb", "benchmark.root=/m", "benchmark.runs=/r")
    entries = suite_entries(mrb.benchmark, mrb.data)
    counts = pd.Series([e.category for e in entries]).value_counts().to_dict()
    assert len(entries) == 40 and counts["T2T"] == 14 and counts["IT2IT"] == 3  # Table 4's columns
    assert entries[-1].data.retriever == "trec" and entries[-1].data.run_file == "/r/IT2IT_OVEN.trec"


@pytest.mark.parametrize(("suite", "name"), [("beir", "arguana"), ("mrb", "T2T_ArguAna")])
def test_every_suites_arguana_keeps_the_judgement_of_a_document_its_corpus_lacks(tmp_path, suite, name):
    """ArguAna's qrels judge a document its corpus lacks (beir-cellar/beir#101): the BEIR suite's
    entry reads it with on_error=skip (the judgement kept for the metrics, as BEIR's evaluation),
    and MRB's ArguAna, the same BEIR folder, stopped the suite with 'unknown doc id'."""
    from urlkit.build import evaluation_set

    folder = tmp_path / "root" / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in
                                                 enumerate(["tabs beat spaces", "spaces beat tabs", "tabs or spaces"])))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "tabs are better"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tgone\t1\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / f"{name}.trec").write_text("".join(f"q1 Q0 d{i} {i + 1} {3 - i} run\n" for i in range(3)))
    runs_key = f"benchmark.runs={runs}" if suite == "mrb" else "data.retriever=bm25"  # BEIR's suite: BM25
    cfg = _suite(f"benchmark={suite}", f"benchmark.root={tmp_path / 'root'}", runs_key)
    (entry,) = [e for e in suite_entries(cfg.benchmark, cfg.data) if e.name == name]
    evaluated = evaluation_set(entry.data, entry.split, depth=10)
    (query,) = evaluated.split.queries
    assert query.qrels == {"d1": 1} and query.absent_qrels == {"gone": 1}


def test_bad_suites_name_the_key():
    cfg = _suite("benchmark=embedded")
    OmegaConf.set_struct(cfg, False)
    cfg.benchmark.datasets.manpages.metric = "ndcg@11"
    with pytest.raises(ConfigError, match=r"benchmark.datasets.manpages.metric='ndcg@11' is not one of"):
        suite_entries(cfg.benchmark, cfg.data)
    del cfg.benchmark.datasets.manpages.category
    with pytest.raises(ConfigError, match="benchmark.datasets.manpages: each dataset needs a category"):
        suite_entries(cfg.benchmark, cfg.data)


def test_each_dataset_counts_with_its_own_metric(tmp_path):
    cfg = _suite("benchmark=embedded")
    OmegaConf.set_struct(cfg, False)
    cfg.benchmark.datasets.manpages.metric = "recall@5"
    cfg.benchmark.datasets.manpages.category = "T2I"
    entries = suite_entries(cfg.benchmark, cfg.data)
    means = {"wordsense": {"ndcg@10": 0.5, "recall@5": 0.9}, "manpages": {"ndcg@10": 0.1, "recall@5": 0.3}}
    results = run_suite(entries, lambda e: [{"model": "m", **means[e.name]}], tmp_path, {"model": "m"})
    table = suite_table(results).set_index("dataset")
    assert table.loc["wordsense", "m"] == 50.0 and table.loc["manpages", "m"] == 30.0
    assert table.loc["mean of 2", "m"] == 40.0 and table.loc["mean of 2", "metric"] == "ndcg@10/recall@5"


def test_a_saved_result_without_the_entrys_metric_is_recomputed(tmp_path):
    """A result saved before success@k existed has no such key: computed again, not a KeyError."""
    cfg = _suite("benchmark=embedded")
    OmegaConf.set_struct(cfg, False)
    entries = suite_entries(cfg.benchmark, cfg.data)
    calls = []

    def evaluate_one(entry, metrics=("ndcg@10",)):
        calls.append(entry.name)
        return [{"model": "m", **{m: 0.5 for m in metrics}}]

    run_suite(entries, evaluate_one, tmp_path, {"model": "m"})
    cfg.benchmark.datasets.manpages.metric = "success@5"
    results = run_suite(suite_entries(cfg.benchmark, cfg.data),
                        lambda e: evaluate_one(e, ("ndcg@10", "success@5")), tmp_path, {"model": "m"})
    assert calls == ["wordsense", "manpages", "manpages"]  # wordsense read back, manpages recomputed
    assert results.set_index("dataset").loc["manpages", "score"] == 0.5


def test_a_training_run_ends_with_the_suite(tmp_path):
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.run import train

    cfg = compose_train(write_small_dataset(tmp_path / "small"), "benchmark=embedded", "eval.test_queries=3",
                        "eval.depth=4")  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "benchmark.csv")
    assert list(table["dataset"][:2]) == ["wordsense", "manpages"] and {"bm25", "reranker"} <= set(table.columns)
    # the suite's per-query files beside its results, not among the final evaluation's
    per_query = pd.read_csv(tmp_path / "run" / "benchmark" / "per_query" / "manpages_test_reranker.csv")
    assert len(per_query) == 3
    assert metrics["benchmark/reranker/manpages/ndcg@10"] == pytest.approx(per_query["ndcg@10"].mean())
    assert "test/ndcg@10" in metrics  # the run's own test split comes first, as without a suite


def test_a_suite_entry_named_as_the_runs_dataset_leaves_the_final_evaluations_files(tmp_path):
    # a run on data of its own called "manpages" with the embedded suite, whose manpages entry
    # is the embedded dataset: the suite used to write its file over the final evaluation's
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.run import train

    data = write_small_dataset(tmp_path / "small")
    info = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**info, "name": "manpages"}))
    cfg = compose_train(data, "benchmark=embedded", "eval.test_queries=3", "eval.depth=4")
    metrics = train(cfg, tmp_path / "run")
    final = pd.read_csv(tmp_path / "run" / "per_query" / "manpages_test_reranker.csv", index_col=0)
    assert all(str(q).startswith("test-") for q in final.index) and len(final) == 3  # the run's own queries
    assert metrics["test/ndcg@10"] == pytest.approx(final["ndcg@10"].mean())
    suite = pd.read_csv(tmp_path / "run" / "benchmark" / "per_query" / "manpages_test_reranker.csv", index_col=0)
    assert not any(str(q).startswith("test-") for q in suite.index)
    assert metrics["benchmark/reranker/manpages/ndcg@10"] == pytest.approx(suite["ndcg@10"].mean())


def test_per_query_files_are_named_by_the_suite_entries(tmp_path):
    """Two entries over datasets that call themselves the same keep their own files."""
    from helpers.run_helpers import write_small_dataset

    from urlkit.evaluation.benchmark import evaluate_suite

    small = write_small_dataset(tmp_path / "small")  # its dataset.json says "small"
    suite = OmegaConf.create({"name": "twice", "datasets": {
        "first": {"category": "T2T", "data": {"path": str(small)}},
        "again": {"category": "T2I", "metric": "mrr@10", "data": {"path": str(small)}},
    }})  # fmt: skip
    results = evaluate_suite(suite, _suite().data, None, "none", "sft", tmp_path / "out", depth=5, batch_size=8,
                             max_queries=None)  # fmt: skip
    for name, metric in (("first", "ndcg@10"), ("again", "mrr@10")):
        per_query = pd.read_csv(tmp_path / "out" / "per_query" / f"{name}_test_bm25.csv")
        assert len(per_query) == 6
        score = results.set_index("dataset").loc[name, "score"]
        assert score == pytest.approx(per_query[metric].mean())
    assert (tmp_path / "out" / "benchmark.csv").is_file()


def test_split_scores_that_split_of_every_dataset_and_never_test_behind_it(tmp_path):
    """Choosing settings on dev must not read test: ``split=dev`` reaches every suite entry, and
    a single dataset's ``data.test_split=dev`` is the split scored."""
    from helpers.run_helpers import write_small_dataset

    from urlkit.evaluation.benchmark import evaluate_suite

    small = write_small_dataset(tmp_path / "small")
    suite = OmegaConf.create({"name": "two", "datasets": {
        "a": {"category": "T2T", "data": {"path": str(small)}},
        "b": {"category": "T2T", "split": "test", "data": {"path": str(small)}},
    }})  # fmt: skip
    assert [e.split for e in suite_entries(suite, _suite().data)] == ["test", "test"]
    assert [e.split for e in suite_entries(suite, _suite().data, "dev")] == ["dev", "dev"]
    evaluate_suite(suite, _suite().data, None, "none", "sft", tmp_path / "out", depth=5, batch_size=8,
                   max_queries=None, split="dev")  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out" / "per_query").glob("*.csv")) == ["a_dev_bm25.csv", "b_dev_bm25.csv"]
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", "model=none", f"data.path={small}", "data.test_split=dev",
         f"hydra.run.dir={tmp_path / 'single'}"], capture_output=True, text=True, timeout=280, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "small/dev: top-25 of bm25" in out.stdout and (tmp_path / "single" / "per_query" / "small_dev_bm25.csv").is_file()
    assert not (tmp_path / "single" / "per_query" / "small_test_bm25.csv").exists()


def test_a_saved_result_of_another_prompt_or_model_is_recomputed(tmp_path):
    out_dir = tmp_path / "eval"
    first = _evaluate(out_dir, "max_queries=2")
    assert first.returncode == 0, first.stderr[-3000:]
    same = _evaluate(out_dir, "max_queries=2")
    assert "wordsense: read back" in same.stdout and "manpages: read back" in same.stdout
    other = _evaluate(out_dir, "max_queries=2", "prompt=urlkit_document_last")
    assert other.returncode == 0, other.stderr[-3000:]
    assert "wordsense: read back" not in other.stdout and "computed with other settings; recomputing" in other.stdout


def test_a_suite_without_its_root_is_an_error_naming_the_key(tmp_path):
    out = subprocess.run([sys.executable, "-m", "urlkit.evaluate", "benchmark=mrb", "model=none", "benchmark.root=/x",
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)  # fmt: skip
    assert out.returncode == 2 and "error: benchmark.runs must be given on the command line" in out.stderr
    assert "Traceback" not in out.stderr
