"""BM25's own scores on a built benchmark: the first stage the reranker has to beat.

BM25 (bm25s defaults: Lucene variant, k1 = 1.5, b = 0.75) indexes ``title + " " + text`` of
every corpus document, tokenised by bm25s (lower case, English stop words, no stemming).

* ``pool="candidates"`` (wordsense): each query's documents are exactly its ``candidates``,
  ordered by BM25 -- the ranking a reranker starts from when the pool is given.
* ``pool="corpus"`` (manpages): each query retrieves its top ``depth`` documents from the
  whole corpus.

Ties (frequent in small pools: a short sentence often shares no word with any gloss) are
broken by a hash of (query id, document id), a fixed arbitrary order, so that neither the
order of the pool nor the document ids can flatter or hurt BM25. The run carries ranks,
not raw scores. Metrics are urlkit.evaluation.metrics' (trec_eval): MRR@10 and Recall@10 count every grade
>= ``min_grade`` as relevant, NDCG@10 uses the grades.
"""

from __future__ import annotations

from typing import Any

import bm25s
import numpy as np

from urlkit.datasets.build import BuiltDataset
from urlkit.datasets.splitting import stable_hash
from urlkit.evaluation.metrics import per_query_metrics

METRICS = ("mrr@10", "ndcg@10", "recall@10")


def bm25_run(
    corpus: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    *,
    pool: str = "corpus",
    depth: int = 100,
) -> dict[str, dict[str, float]]:
    """``{query id: {doc id: score}}``: BM25's ranking of each query, ``depth`` deep."""
    if pool not in ("corpus", "candidates"):
        raise ValueError(f"pool must be 'corpus' or 'candidates', got {pool!r}")
    doc_ids = [doc["id"] for doc in corpus]
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    texts = [f"{doc.get('title', '')} {doc.get('text', '')}".strip() for doc in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    tokenized = bm25s.tokenize(
        [q["text"] for q in queries], return_ids=False, stopwords="en", show_progress=False
    )
    run: dict[str, dict[str, float]] = {}
    for query, tokens in zip(queries, tokenized, strict=True):
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(doc_ids))
        if pool == "candidates":
            ranked = [(float(scores[row_of[d]]), d) for d in query["candidates"]]
        else:
            ranked = [(float(score), doc_id) for score, doc_id in zip(scores, doc_ids, strict=True)]
        ranked.sort(key=lambda pair: (-pair[0], stable_hash(f"{query['id']}\t{pair[1]}")))
        ranked = ranked[:depth]
        run[query["id"]] = {doc_id: float(len(ranked) - rank)
                            for rank, (_, doc_id) in enumerate(ranked)}
    return run


def evaluate_run(
    run: dict[str, dict[str, float]], queries: list[dict[str, Any]], *, min_grade: int = 1
) -> dict[str, float]:
    """Mean METRICS of ``run`` (urlkit.evaluation.metrics, trec_eval), counting grade >= ``min_grade`` as relevant."""
    qrels = {q["id"]: {d: int(g) for d, g in q["positives"].items() if g >= min_grade}
             for q in queries}
    qrels = {qid: grades for qid, grades in qrels.items() if grades}
    per_query = per_query_metrics(qrels, {qid: run.get(qid, {}) for qid in qrels}, METRICS)
    return {name: float(per_query[name].mean()) for name in METRICS}


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """``{split: {metric: value}}`` as a Markdown table (3 decimals)."""
    lines = ["| split | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for split, metrics in rows.items():
        lines.append(f"| {split} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def print_report(dataset: BuiltDataset, pool: str | None) -> None:
    """Split sizes, builder counts and (with ``pool``) BM25 on dev and test, as Markdown."""
    print(f"{dataset.name}: {len(dataset.corpus)} documents; {dataset.stats}")
    print("| split | queries | mean candidates | mean positives |\n|---|---|---|---|")
    for split, row in dataset.summary().items():
        print(f"| {split} | {row['queries']} | {row['mean_candidates']:.2f} | "
              f"{row['mean_positives']:.2f} |")
    if pool is None:
        return
    rows = {}
    for split in ("dev", "test"):
        queries = dataset.splits[split]
        run = bm25_run(dataset.corpus, queries, pool=pool)
        rows[split] = evaluate_run(run, queries)
        top = max(g for q in queries for g in q["positives"].values())
        if top > 1:  # graded: also the score that counts only the best grade as relevant
            rows[f"{split}, grade {top} only"] = evaluate_run(run, queries, min_grade=top)
    print(f"\nBM25 ({pool}):\n" + markdown_table(rows))
