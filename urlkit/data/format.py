"""The one in-memory example format: documents, queries, splits, and the data error.

Every loader (urlkit JSONL, BEIR, M-BEIR) produces a :class:`Split`; everything downstream
(first stage, negatives, prompts, training groups, evaluation) reads only these classes.
Text and images may appear on either side: a document or a query carries ``text``, an
``image`` (absolute path, checked at load time to exist and to open as a picture, its pixels
never decoded here: ``urlkit.data.images.picture_problem``), or both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from urlkit.errors import UrlkitError


class DataError(UrlkitError):
    """Bad input data, with the file and (1-based) line that caused it.

    ``reason`` is a short, stable key ("malformed JSON", "missing image", ...) under which
    ``on_error="skip"`` counts the skipped line in :attr:`Split.skipped`.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        reason: str = "invalid data",
    ):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = reason
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class MissingSplitError(DataError):
    """The split asked for has no file in the dataset (the path looked for is in the message):
    a run leaves out an optional split (dev) on this error alone, never on a broken file."""

    def __init__(self, message: str, *, path: str | Path | None = None):
        super().__init__(message, path=path, reason="missing split file")


@dataclass(frozen=True)
class Document:
    """A candidate the reranker scores: text, an image, or both."""

    id: str
    text: str = ""
    image: str | None = None  # absolute path to an image file
    title: str = ""

    @property
    def modality(self) -> str:
        """"T", "I" or "IT" (the letters of Table 4's task categories)."""
        return _modality(bool(self.title or self.text), self.image is not None)

    @property
    def empty(self) -> bool:
        """No text, title or image: nothing to score."""
        return not (self.text.strip() or self.title.strip() or self.image)


@dataclass(kw_only=True)
class Query:
    """A query with its relevance judgements.

    ``qrels`` maps doc id -> grade; grade > 0 is relevant (a *positive*), grade 0 is judged
    non-relevant (BEIR qrels with score 0). ``negatives`` are explicit hard negatives from the
    data itself; ``candidates`` is a natural candidate pool (e.g. all senses of a word): when
    present, the first stage ranks within it and random negatives are drawn from it.
    """

    id: str
    text: str = ""
    image: str | None = None
    instruction: str = ""  # per-query instruction; empty -> the split's instruction
    # prompts the query may be trained with (M-BEIR's instruction TSV): training draws one per
    # epoch; evaluation uses ``instruction`` (one of them, fixed per seed and query id)
    instruction_choices: tuple[str, ...] = ()
    qrels: dict[str, int]
    negatives: list[str] = field(default_factory=list)
    candidates: list[str] | None = None
    # judgements of doc ids the corpus lacks (BEIR's ArguAna): never a candidate, a negative or
    # a training positive, but part of the evaluation's qrels, so that the ideal DCG counts them
    # as BEIR's pytrec_eval does (a query judging only such documents scores 0, not dropped)
    absent_qrels: dict[str, int] = field(default_factory=dict)

    @property
    def positives(self) -> list[str]:
        """Doc ids with grade > 0, in the order the data gave them."""
        return [doc_id for doc_id, grade in self.qrels.items() if grade > 0]

    @property
    def modality(self) -> str:
        return _modality(bool(self.text), self.image is not None)

    @property
    def judgements(self) -> dict[str, int]:
        """Every judgement, the corpus's documents' and absent ones': what metrics score against."""
        return {**self.absent_qrels, **self.qrels} if self.absent_qrels else self.qrels


@dataclass
class Split:
    """One split of one dataset: a corpus and the queries judged against it."""

    name: str  # dataset name, e.g. "wordsense"
    split: str  # "train" / "dev" / "test"
    category: str  # task category for Table 4: "T2T", "T2I", "I2T", "IT2T", ...
    instruction: str
    corpus: dict[str, Document]
    queries: list[Query]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> skipped input lines
    source: str = ""  # the path the split was loaded from (for reports; "" if built in memory)
    # what the loader left out or changed that is not an error, e.g. "12 lines of other tasks"
    notes: list[str] = field(default_factory=list)
    # documents of this corpus that the dataset's dev or test queries judge (any grade): never a
    # training negative, hard or random (``load_split(held_out_splits=...)``, urlkit.data.heldout)
    held_out: frozenset[str] = frozenset()

    def instruction_for(self, query: Query) -> str:
        """The query's own instruction, falling back to the split's."""
        return query.instruction or self.instruction

    def report(self) -> str:
        """One line for the logs of the training and evaluation entry points."""
        line = (
            f"{self.name}/{self.split} [{self.category}]: {len(self.queries)} queries, "
            f"{len(self.corpus)} documents"
        )
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            line += f"; skipped {sum(self.skipped.values())} input lines ({reasons})"
        else:
            line += "; nothing skipped"
        for note in self.notes:
            line += f"; {note}"
        return line + (f" <- {self.source}" if self.source else "")


def infer_category(queries: list[Query], corpus: dict[str, Document]) -> str:
    """The most common "<query modality>2<positive modality>" pair, e.g. "T2I".

    Used when neither the caller nor ``dataset.json`` names the category; "T2T" for an
    empty split.
    """
    pairs: Counter[str] = Counter()
    for query in queries:
        for doc_id in query.positives[:1]:
            pairs[f"{query.modality}2{corpus[doc_id].modality}"] += 1
    return pairs.most_common(1)[0][0] if pairs else "T2T"


def _modality(has_text: bool, has_image: bool) -> str:
    return ("I" if has_image else "") + ("T" if has_text or not has_image else "")
