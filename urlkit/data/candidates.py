"""First stage: the candidates a reranker rescores and hard negatives are drawn from.

A *ranking* maps query id -> ``[(doc id, score), ...]``, best first. Two retrievers:

* ``bm25``: bm25s (Lucene BM25, k1=1.5, b=0.75) over ``title + " " + text``, tokenised by
  bm25s's default regex ``\\b\\w\\w+\\b``, lower-cased, with its English stopword list and
  *no stemmer* (no extra dependency; stemming changes little for reranking candidates).
  A query with its own ``candidates`` pool is ranked within that pool (IDF still comes
  from the whole corpus) and keeps every pool member, the zero-score ones last in the
  pool's order: the pool *is* the task (all senses of a word). Without a pool only the
  documents sharing a term with the query are candidates, as Lucene (and so Pyserini and
  BEIR's BM25) returns them: a zero-score document is not retrieved, it is the corpus's
  first in file order, and as a "hard" negative the same few documents would be drawn for
  every low-overlap query. Equal scores keep the pool's or the corpus's order, so rankings
  are deterministic.
* ``pool``: each query's own ``candidates`` list, in its stored order (image tasks with
  natural pools).
* ``trec``: a 6-column TREC run file ``qid Q0 docid rank score tag`` from any retriever
  (dense, multimodal, ...): the way to give image queries candidates.

BM25 rankings are cached on disk under ``urlkit.paths.cache_dir("candidates")``, keyed by a
content hash of the split (document and query texts and pools), the split name, the
retriever settings and k; files are written to a temporary name and renamed
(``os.replace``), so two processes building the same cache at once never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from urlkit.atomic import atomic_write
from urlkit.data.format import DataError, Split
from urlkit.data.reading import ErrorPolicy, iter_lines

Ranking = dict[str, list[tuple[str, float]]]


def without_identical_ids(ranking: Ranking, k: int | None = None) -> Ranking:
    """``ranking`` without a query's own id among its documents (BEIR's ``ignore_identical_ids``:
    ArguAna and Quora hold each query as a corpus document of that id), cut to ``k``."""
    return {qid: [(d, s) for d, s in ranked if d != qid][:k] for qid, ranked in ranking.items()}

# "unmatched": what becomes of documents sharing no term with the query (part of the cache key)
BM25_SETTINGS = {"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en", "stemmer": None,
                 "unmatched": "kept in a pool, else not retrieved"}
TREC_HINT = "give the first stage as a TREC run file instead (data.retriever=trec data.run_file=...)"


def first_stage(
    split: Split,
    retriever: str = "bm25",
    k: int = 100,
    run_file: str | Path | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> Ranking:
    """The top-``k`` candidates of every query of ``split``: the single entry point."""
    if retriever == "bm25":
        return bm25_candidates(split, k=k, cache_dir=cache_dir, cache=cache)
    if retriever == "trec":
        if run_file is None:
            raise ValueError("retriever='trec' needs run_file=<a TREC run file>")
        return _run_for_split(read_trec_run(run_file), split, Path(run_file), k)
    if retriever == "pool":
        return pool_candidates(split, k)
    raise ValueError(f"retriever must be 'bm25', 'trec' or 'pool', got {retriever!r}")


def pool_candidates(split: Split, k: int = 100) -> Ranking:
    """Each query's own ``candidates`` pool, in its stored order, as the first stage.

    For tasks whose natural pools are the candidate lists (e.g. the emoji tasks, where image
    queries or image documents leave BM25 nothing to match). Scores are k, k-1, ... so the
    pool order is the ranking.
    """
    ranking: Ranking = {}
    for query in split.queries:
        if query.candidates is None:
            raise DataError(
                f"retriever=pool needs a candidate pool for every query; query {query.id!r} of "
                f"{split.name}/{split.split} has none ({TREC_HINT})",
                path=split.source or None,
            )
        pool = query.candidates[:k]
        ranking[query.id] = [(doc_id, float(len(pool) - i)) for i, doc_id in enumerate(pool)]
    return ranking


def bm25_candidates(
    split: Split, k: int = 100, cache_dir: str | Path | None = None, *, cache: bool = True
) -> Ranking:
    """BM25 top-``k`` per query (see the module docstring), from the disk cache if built."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    path = _cache_path(split, k, cache_dir) if cache else None
    if path is not None and path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return cached
    ranking = _bm25_rank(split, k)
    if path is not None:
        _write_cache(path, ranking)
    return ranking


def read_trec_run(path: str | Path) -> Ranking:
    """Read ``qid Q0 docid rank score tag`` lines (plain or gzip); each query's list sorted by
    score (desc.), ties by rank. Errors name the file and line.

    Read by the data files' own reader: a byte order mark opening the file is no part of the
    first query id (it made that line a query of its own, so the real query silently lost its
    top candidate), a byte that is not UTF-8 is an error naming its line, and ``run.trec.gz``
    is read as gzip."""
    path = Path(path)
    if not path.is_file():
        raise DataError("TREC run file not found", path=path)
    entries: dict[str, dict[str, tuple[float, int]]] = {}
    for line_no, line in iter_lines(path, ErrorPolicy("raise")):
        columns = line.split()
        if not columns:
            continue
        if len(columns) != 6:
            raise DataError(f"expected 6 columns 'qid Q0 docid rank score tag', got "
                            f"{len(columns)}", path=path, line=line_no, reason="malformed run")
        query_id, _, doc_id, rank, score = columns[:5]
        try:
            rank_value, score_value = int(rank), float(score)
        except ValueError:
            raise DataError(f"rank {rank!r} must be an integer and score {score!r} a number",
                            path=path, line=line_no, reason="malformed run") from None
        if score_value != score_value:  # NaN: no order with any other score, so no ranking either
            raise DataError(f"score {score!r} is not a number (a first stage's NaN: give it a finite score)",
                            path=path, line=line_no, reason="malformed run")
        if doc_id in entries.setdefault(query_id, {}):
            raise DataError(f"doc {doc_id!r} appears twice for query {query_id!r}",
                            path=path, line=line_no, reason="malformed run")
        entries[query_id][doc_id] = (score_value, rank_value)
    return {
        query_id: [(d, s) for d, (s, _) in sorted(docs.items(), key=lambda e: (-e[1][0], e[1][1]))]
        for query_id, docs in entries.items()
    }


def write_trec_run(path: str | Path, run: Ranking, tag: str = "urlkit") -> None:
    """Write a ranking as a TREC run file (ranks 1, 2, ... in list order), atomically."""
    lines = [
        f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n"
        for query_id, docs in run.items()
        for rank, (doc_id, score) in enumerate(docs, start=1)
    ]
    atomic_write(Path(path), lambda f: f.writelines(lines))


def _run_for_split(run: Ranking, split: Split, path: Path, k: int) -> Ranking:
    """The run's top-``k`` for the split's queries; unknown doc ids and missing queries are
    errors (a document skipped at load time shows up here as unknown)."""
    missing = [q.id for q in split.queries if q.id not in run]
    if missing:
        raise DataError(f"no candidates for {len(missing)} of the {len(split.queries)} queries "
                        f"of {split.name}/{split.split}, e.g. {missing[:5]}", path=path)
    ranking: Ranking = {}
    for query in split.queries:
        unknown = [doc_id for doc_id, _ in run[query.id] if doc_id not in split.corpus]
        if unknown:
            raise DataError(f"query {query.id!r} ranks doc ids not in the corpus of "
                            f"{split.name}: {unknown[:5]}", path=path)
        ranking[query.id] = run[query.id][:k]
    return ranking


def _bm25_rank(split: Split, k: int) -> Ranking:
    import bm25s

    doc_ids = list(split.corpus)
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    texts = [f"{d.title} {d.text}".strip() for d in split.corpus.values()]
    if not any(texts):
        raise DataError(f"the corpus of {split.name} has no text, so BM25 cannot rank it; "
                        + TREC_HINT, path=split.source or None)
    for query in split.queries:
        if not query.text.strip():
            raise DataError(f"query {query.id!r} of {split.name} has no text (image only), so "
                            "BM25 cannot rank for it; " + TREC_HINT, path=split.source or None)

    stopwords = BM25_SETTINGS["stopwords"]
    model = bm25s.BM25(method=BM25_SETTINGS["method"], k1=BM25_SETTINGS["k1"],
                       b=BM25_SETTINGS["b"])
    # Token ids + vocabulary for the corpus index (twice as fast as lists of strings); the
    # queries stay strings, mapped onto the corpus vocabulary (unknown words score nothing).
    model.index(bm25s.tokenize(texts, stopwords=stopwords, show_progress=False),
                show_progress=False)
    query_tokens = bm25s.tokenize([q.text for q in split.queries], stopwords=stopwords,
                                  return_ids=False, show_progress=False)

    ranking: Ranking = {}
    for query, tokens in zip(split.queries, query_tokens, strict=True):
        token_ids = model.get_tokens_ids(tokens)
        scores = (model.get_scores_from_ids(token_ids) if token_ids
                  else np.zeros(len(doc_ids), dtype=np.float32))
        if query.candidates is not None:
            pool = np.array([position[d] for d in query.candidates], dtype=np.int64)
            order = pool[_top_k(scores[pool], k)]
        else:
            order = _top_k(scores, k)
            order = order[scores[order] > 0]
        ranking[query.id] = [(doc_ids[i], float(scores[i])) for i in order]
    return ranking


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties go to the lower index. O(n)."""
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest score
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)[: k - len(above)]
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(n)
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def _cache_path(split: Split, k: int, cache_dir: str | Path | None) -> Path:
    import bm25s

    from urlkit.paths import cache_dir as default_cache_dir

    content = hashlib.sha256()
    for doc in split.corpus.values():
        content.update(json.dumps([doc.id, doc.title, doc.text]).encode())
    for query in split.queries:
        content.update(json.dumps([query.id, query.text, query.candidates]).encode())
    key = json.dumps({
        "retriever": "bm25", "bm25s": bm25s.__version__, **BM25_SETTINGS, "k": k,
        "dataset": split.name, "split": split.split, "content": content.hexdigest(),
    }, sort_keys=True)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("candidates")
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    label = re.sub(r"[^\w.-]+", "_", f"{split.name}-{split.split}")
    return folder / f"bm25-{label}-k{k}-{digest}.json"


def _read_cache(path: Path) -> Ranking | None:
    """The cached ranking, or None when the file is unreadable (then it is rebuilt)."""
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        return {qid: [(d, float(s)) for d, s in docs] for qid, docs in stored.items()}
    except (OSError, ValueError, TypeError):
        return None


def _write_cache(path: Path, ranking: Ranking) -> None:
    atomic_write(path, lambda f: json.dump(ranking, f))
