"""BEIR folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

The layout of BEIR (Thakur et al., 2021) and of 14 of MRB's datasets:

    corpus.jsonl     {"_id": "d1", "title": "...", "text": "..."}
    queries.jsonl    {"_id": "q1", "text": "..."}
    qrels/test.tsv   query-id <TAB> corpus-id <TAB> score   (a header line first)

A split holds exactly the queries that have qrels in ``qrels/<split>.tsv`` (normal BEIR:
``queries.jsonl`` is shared by all splits). Score 0 means judged non-relevant; a query whose
judgements are all 0 has no positive and is an error (or skipped). An optional ``image``
field on a corpus line (a path relative to the folder) is read too, and an optional
``dataset.json`` names the dataset, its category and instruction, as for urlkit JSONL.
"""

from __future__ import annotations

from pathlib import Path

from urlkit.data.format import DataError, Document, MissingSplitError, Query, Split
from urlkit.data.picture_checks import PictureField
from urlkit.data.reading import (
    ErrorPolicy,
    LineFields,
    check_query,
    find_data_file,
    iter_jsonl,
    iter_lines,
    parses_as,
    read_dataset_info,
    read_records,
)


def load_beir(folder: Path, split: str, policy: ErrorPolicy) -> Split:
    info = read_dataset_info(folder)
    corpus_path = find_data_file(folder, "corpus")
    queries_path = find_data_file(folder, "queries")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if corpus_path is None or queries_path is None:
        raise DataError("a BEIR folder needs corpus.jsonl and queries.jsonl", path=folder)
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise MissingSplitError(f"no qrels for split {split!r}; available: {available}", path=qrels_path)

    corpus = _read_corpus(corpus_path, folder, policy)
    texts = _read_queries(queries_path, policy)  # query id -> (text, line number)
    qrels, absent, qrels_lines = _read_qrels(qrels_path, texts, corpus, policy)

    queries: list[Query] = []
    for query_id in qrels_lines:  # every judged query, in the qrels' order
        text, line_no = texts[query_id]
        query = Query(id=query_id, text=text, qrels=qrels.get(query_id, {}),
                      absent_qrels=absent.get(query_id, {}))
        # The query is judged in the qrels but *written* in queries.jsonl: an empty text is
        # a queries.jsonl problem, a missing positive a qrels problem.
        where = (
            LineFields({}, queries_path, line_no)
            if not text.strip()
            else LineFields({}, qrels_path, qrels_lines[query_id])
        )
        try:
            queries.append(check_query(query, corpus, where))
        except DataError as err:
            policy.handle(err)

    empty = sum(doc.empty for doc in corpus.values())
    notes = [f"{empty} empty documents kept, as BEIR keeps them"] if empty else []
    return Split(
        name=info["name"],
        split=split,
        category=info["category"],
        instruction=info["instruction"],
        corpus=corpus,
        queries=queries,
        source=str(folder),
        notes=notes + absent_notes(queries),
    )


def _read_corpus(path: Path, folder: Path, policy: ErrorPolicy) -> dict[str, Document]:
    # An empty document (no title, text or image) is kept, as BEIR keeps it: FiQA's corpus has
    # some, and dropping them would change which documents a first-stage run file may name.
    return read_records(path, policy, lambda fields: Document(
        id=fields.id("_id"),
        text=fields.text("text"),
        title=fields.text("title"),
        image=fields.image("image", folder),
    ), "document", picture=PictureField("image", folder))  # fmt: skip


def _read_queries(path: Path, policy: ErrorPolicy) -> dict[str, tuple[str, int]]:
    texts: dict[str, tuple[str, int]] = {}
    for line_no, record in iter_jsonl(path, policy):
        fields = LineFields(record, path, line_no)
        try:
            query_id, text = fields.id("_id"), fields.text("text")
            if query_id in texts:
                raise fields.error(f"duplicate query id {query_id!r}", "duplicate id")
        except DataError as err:
            policy.handle(err)
            continue
        texts[query_id] = (text, line_no)
    return texts


def _read_qrels(
    path: Path,
    texts: dict[str, tuple[str, int]],
    corpus: dict[str, Document],
    policy: ErrorPolicy,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], dict[str, int]]:
    """query id -> {doc id: grade} of the corpus's documents, the same of documents the
    corpus lacks, and query id -> the line of its first judgement.

    Lines are ``query-id corpus-id score`` (BEIR) or ``query-id 0 corpus-id score`` (TREC):
    split on tabs when the line has one (as BEIR reads them: an id may hold a space), else on
    whitespace; a first line whose score is not a number is the header; a score must be an
    integer grade (BEIR's loader refuses "0.5" too). A document the corpus lacks is an error
    (a wrong corpus is the usual cause); with ``on_error=skip`` its judgement is kept apart
    (``Query.absent_qrels``), as BEIR's evaluation keeps it in the ideal DCG.
    """
    qrels: dict[str, dict[str, int]] = {}
    absent: dict[str, dict[str, int]] = {}
    first_line: dict[str, int] = {}
    # the data files' line reader: a BOM is not part of the first id, a byte that is not UTF-8
    # is a bad line (a DataError naming it, or skipped and counted), not a UnicodeDecodeError
    for line_no, line in iter_lines(path, policy):
        columns = qrels_columns(line)
        if not any(columns):
            continue
        fields = LineFields({}, path, line_no)
        try:
            if len(columns) not in (3, 4):
                raise fields.error(
                    f"expected 'query-id corpus-id score', got {len(columns)} columns",
                    "malformed qrels line",
                )
            query_id, doc_id, score = columns[0], columns[-2], columns[-1]
            try:
                grade = int(score)
            except ValueError:
                if line_no == 1 and not parses_as(float, score):
                    continue  # the header: query-id corpus-id score
                raise fields.error(f"score {score!r} is not an integer grade",
                                   "malformed qrels line") from None
            if query_id not in texts:
                raise fields.error(f"unknown query id {query_id!r} (not in queries.jsonl)",
                                   "unknown query id")
            if doc_id in qrels.get(query_id, {}) or doc_id in absent.get(query_id, {}):
                raise fields.error(f"second judgement of ({query_id!r}, {doc_id!r})",
                                   "duplicate judgement")
            if doc_id not in corpus:
                if policy.on_error == "raise":
                    raise fields.error(f"unknown doc id {doc_id!r} (not in the corpus; "
                                       "data.on_error=skip keeps its judgement for the metrics "
                                       "alone, as BEIR does)", "unknown doc id")
                absent.setdefault(query_id, {})[doc_id] = grade
                first_line.setdefault(query_id, line_no)
                continue
        except DataError as err:
            policy.handle(err)
            continue
        qrels.setdefault(query_id, {})[doc_id] = grade
        first_line.setdefault(query_id, line_no)
    return qrels, absent, first_line


def qrels_columns(line: str) -> list[str]:
    """The columns of a qrels line: split on tabs when it has one (as BEIR reads them: an id
    may hold a space), else on whitespace. Trailing tabs (some spreadsheet exports) are no
    columns: an empty last "score" made the first judgement a header, silently dropped, and
    every other line an error."""
    line = line.rstrip()
    return [c.strip() for c in line.split("\t")] if "\t" in line else line.split()


def judged_ids(folder: Path, split: str, policy: ErrorPolicy) -> set[str]:
    """The corpus ids ``qrels/<split>.tsv`` judges, any grade, without reading the corpus (a
    training split's held-out documents, ``urlkit.data.loaders.judged_documents``)."""
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise MissingSplitError(f"no qrels for split {split!r}", path=path)
    judged: set[str] = set()
    for line_no, line in iter_lines(path, policy):
        columns = qrels_columns(line)
        if len(columns) in (3, 4) and parses_as(int, columns[-1]):
            judged.add(columns[-2])
        elif any(columns) and not (line_no == 1 and not parses_as(float, columns[-1])):  # not the header
            policy.handle(DataError(f"expected 'query-id corpus-id score', got {line.strip()!r}",
                                    path=path, line=line_no, reason="malformed qrels line"))
    return judged


def absent_notes(queries: list[Query]) -> list[str]:
    """For ``Split.notes``: the judgements of documents the corpus lacks, and the queries that
    have no other positive."""
    judged = sum(len(q.absent_qrels) for q in queries)
    if not judged:
        return []
    only = sum(not q.positives for q in queries)
    notes = [f"{judged} judgement{'s' if judged > 1 else ''} of documents the corpus lacks kept for "
             "the metrics' ideal ranking (as BEIR's evaluation), never candidates"]
    if only:
        notes.append(f"{only} quer{'ies' if only > 1 else 'y'} judging only such documents evaluated "
                     "(scoring 0, as in BEIR), never trained on")
    return notes

