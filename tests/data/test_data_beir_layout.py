"""BEIR as BEIR reads it: tab-separated qrels, integer grades, and its evaluation's
``ignore_identical_ids`` (ArguAna and Quora hold each query as a corpus document of its own id)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from urlkit.build import evaluation_set
from urlkit.data import DataError, load_split
from urlkit.data.format import MissingSplitError


def _beir(root, qrels, corpus=None, queries=None):
    root.mkdir(parents=True, exist_ok=True)
    corpus = corpus or [{"_id": i, "title": "", "text": f"document about {w}"}
                        for i, w in (("d 1", "cats"), ("1", "dogs"), ("2", "birds"))]  # fmt: skip
    queries = queries or [{"_id": "q 1", "text": "cats"}, {"_id": "q2", "text": "dogs"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_qrels_are_split_on_tabs_so_an_id_may_hold_a_space(tmp_path):
    root = _beir(tmp_path, "\ufeffquery-id\tcorpus-id\tscore\nq 1\td 1\t2\nq2\t1\t1\n")
    split = load_split(root, "test", format="beir")
    assert {q.id: q.qrels for q in split.queries} == {"q 1": {"d 1": 2}, "q2": {"1": 1}}


@pytest.mark.parametrize("score", ["0.5", "1.9"])
def test_a_grade_that_is_not_an_integer_is_an_error(tmp_path, score):
    root = _beir(tmp_path, f"query-id\tcorpus-id\tscore\nq 1\td 1\t1\nq2\t1\t{score}\n")
    with pytest.raises(DataError, match=f"score '{score}' is not an integer grade") as err:
        load_split(root, "test", format="beir")
    assert err.value.line == 3


def test_a_missing_split_is_its_own_error(tmp_path):
    root = _beir(tmp_path, "q2\t1\t1\n")
    with pytest.raises(MissingSplitError, match="no qrels for split 'dev'"):
        load_split(root, "dev", format="beir")
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "corpus.jsonl").write_text('{"id": "1", "text": "a"}\n')
    (tmp_path / "jsonl" / "test.jsonl").write_text('{"id": "q", "text": "a", "positives": ["1"]}\n')
    with pytest.raises(MissingSplitError, match="no split 'dev'"):
        load_split(tmp_path / "jsonl", "dev", format="jsonl")


def test_identical_ids_are_not_candidates_when_asked(tmp_path):
    """The query's own document (same id, same text) is what BM25 ranks first."""
    corpus = [{"_id": f"{i}", "text": t} for i, t in enumerate(
        ["tabs are better than spaces", "spaces are better than tabs", "tabs or spaces, a matter of taste",
         "the weather is nice today"])]  # fmt: skip
    queries = [{"_id": "0", "text": "tabs are better than spaces"}]
    root = _beir(tmp_path, "0\t1\t1\n", corpus=corpus, queries=queries)
    data = OmegaConf.create({"path": str(root), "format": "beir", "retriever": "bm25", "run_file": None,
                             "ignore_identical_ids": False})  # fmt: skip
    assert evaluation_set(data, "test", 3, None).ranking["0"][0][0] == "0"  # itself, first
    data.ignore_identical_ids = True
    ranked = [doc for doc, _ in evaluation_set(data, "test", 3, None).ranking["0"]]
    assert ranked == ["1", "2"]  # not itself; the weather shares no term, so is not retrieved


def test_an_empty_document_is_kept_and_evaluated_around(tmp_path):
    """FiQA's corpus has documents with neither title nor text; BEIR keeps them."""
    corpus = [{"_id": "1", "title": "", "text": "cats purr"}, {"_id": "2", "title": "", "text": ""},
              {"_id": "3", "title": "dogs", "text": "dogs bark"}]  # fmt: skip
    root = _beir(tmp_path, "q 1\t1\t1\nq2\t3\t1\n", corpus=corpus)
    split = load_split(root, "test", format="beir")
    assert "2" in split.corpus and "1 empty documents kept, as BEIR keeps them" in split.report()
    data = OmegaConf.create({"path": str(root), "format": "beir", "retriever": "bm25", "run_file": None})
    ranking = evaluation_set(data, "test", 3, None).ranking
    assert ranking["q 1"][0][0] == "1" and ranking["q2"][0][0] == "3"


def test_evaluation_queries_that_also_train_are_said(tmp_path):
    """A split that is not held out (one file named twice, dev set to test, a BEIR train split
    holding the test queries) trains on; the run says so instead of staying silent."""
    from helpers.run_helpers import write_small_dataset

    from urlkit.build import shared_queries
    from urlkit.evaluation.rerank import EvalSet

    small = write_small_dataset(tmp_path / "small")  # its dev and test reuse training topics
    train, test = load_split(small, "train"), load_split(small, "test")
    (line,) = shared_queries([train], {"test": EvalSet(test, {}, None)})
    assert line.startswith("6 of the 6 test queries of small/test are also training queries")
    held_out = load_split("data/wordsense", "test")
    assert shared_queries([load_split("data/wordsense", "train")], {"test": EvalSet(held_out, {}, None)}) == []
    same = load_split("data/wordsense", "dev")
    assert shared_queries([same], {"dev": EvalSet(same, {}, None)})[0].startswith("402 of the 402 dev queries")


def test_identical_ids_are_not_training_negatives_either(tmp_path):
    from helpers.run_helpers import compose_train

    from urlkit.build import training_workload

    corpus = [{"_id": f"{i}", "text": t} for i, t in enumerate(
        ["tabs are better than spaces", "spaces are better than tabs", "tabs or spaces", "nice weather"])]
    root = _beir(tmp_path, "0\t1\t1\n", corpus=corpus, queries=[{"_id": "0", "text": "tabs are better than spaces"}])
    (root / "qrels" / "train.tsv").write_text("0\t1\t1\n")
    for ignore in (False, True):
        cfg = compose_train(root, "data=beir", f"data.path={root}", f"data.ignore_identical_ids={ignore}")
        ranked = [doc for doc, _ in training_workload(cfg).ranking["0"]]  # where hard negatives come from
        assert (ranked[0] == "0") is not ignore and ("0" in ranked) is not ignore


def _beir_ndcg10(qrels_file, run):
    """BEIR's EvaluateRetrieval.evaluate: pytrec_eval on the qrels file as written (a document
    the corpus lacks included), averaged over the run's queries."""
    import pytrec_eval

    qrels: dict[str, dict[str, int]] = {}
    for line in qrels_file.read_text(encoding="utf-8").splitlines()[1:]:
        query, doc, grade = line.split("\t")
        qrels.setdefault(query, {})[doc] = int(grade)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return sum(s["ndcg_cut_10"] for s in scores.values()) / len(scores)


def test_judgements_of_documents_the_corpus_lacks_count_as_in_beir(tmp_path):
    """ArguAna's qrels judge a document its corpus lacks (beir-cellar/beir#101). BEIR keeps the
    judgement in the ideal DCG, and a query judging only such documents scores 0 in the mean;
    urlkit's metrics (with on_error=skip) are BEIR's to the digit, and nothing absent is a
    candidate or trained on."""
    from urlkit.data.candidates import bm25_candidates
    from urlkit.data.groups import TrainGroups
    from urlkit.evaluation.rerank import first_stage_run, score

    corpus = [{"_id": f"d{i}", "text": t} for i, t in enumerate(
        ["cats sleep on warm mats", "dogs run in the park", "birds sing at dawn", "cats and dogs",
         "fish swim in the sea", "the park has birds"])]  # fmt: skip
    queries = [{"_id": "q1", "text": "cats sleep"}, {"_id": "q2", "text": "dogs park"},
               {"_id": "q3", "text": "birds dawn"}]
    qrels = ("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\tgone\t1\nq2\td1\t1\n"
             "q3\tgone2\t2\nq3\td5\t0\n")
    root = _beir(tmp_path, qrels, corpus=corpus, queries=queries)
    with pytest.raises(DataError, match="unknown doc id 'gone'.*on_error=skip") as err:
        load_split(root, "test", format="beir")
    assert err.value.line == 3

    split = load_split(root, "test", format="beir", on_error="skip")
    by_id = {q.id: q for q in split.queries}
    assert list(by_id) == ["q1", "q2", "q3"] and not split.skipped
    assert by_id["q1"].qrels == {"d0": 1} and by_id["q1"].absent_qrels == {"gone": 1}
    assert by_id["q3"].positives == [] and by_id["q3"].judgements == {"gone2": 2, "d5": 0}
    assert any("2 judgements of documents the corpus lacks" in n for n in split.notes)
    assert any("1 query judging only such documents" in n for n in split.notes)

    ranking = bm25_candidates(split, k=10, cache=False)
    assert all(d in split.corpus for docs in ranking.values() for d, _ in docs)
    run = first_stage_run(split, ranking, depth=10)
    per_query = score(split, run)
    assert per_query.loc["q3", "ndcg@10"] == 0.0 and 0 < per_query.loc["q1", "ndcg@10"] < 1
    assert per_query["ndcg@10"].mean() == pytest.approx(
        _beir_ndcg10(root / "qrels" / "test.tsv", run), abs=1e-12)

    groups = TrainGroups(split, ranking, n_negatives=2)
    assert len(groups) == 2 and {groups[i]["query_id"] for i in range(2)} == {"q1", "q2"}
    assert "1 query judges only documents the corpus lacks, left out" in groups.report()
    assert all(d in split.corpus for i in range(2) for d in groups[i]["doc_ids"])


def test_trailing_tabs_are_no_column_and_keep_the_first_judgement(tmp_path):
    root = _beir(tmp_path, "q 1\td 1\t2\t\r\nq2\t1\t1\t\r\n")
    split = load_split(root, "test", format="beir")
    assert {q.id: q.qrels for q in split.queries} == {"q 1": {"d 1": 2}, "q2": {"1": 1}}
