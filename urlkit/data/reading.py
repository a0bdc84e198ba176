"""Line-level reading shared by the loaders: JSONL (plain or gzip), fields, images, errors.

Every problem becomes a :class:`DataError` naming the file and the 1-based line. The
:class:`ErrorPolicy` decides what happens next: ``"raise"`` stops the load, ``"skip"`` drops
the offending line and counts it under the error's ``reason`` (nothing is dropped silently:
the counts end up in ``Split.skipped`` and in ``Split.report()``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from urlkit.data.format import DataError, Document, Query
from urlkit.data.picture_checks import PictureChecks, PictureField, PictureShare

ON_ERROR = ("raise", "skip")


class ErrorPolicy:
    """``raise`` or ``skip`` bad lines; counts what was skipped, by reason. ``check_pictures``:
    how hard a picture is looked at (:mod:`urlkit.data.picture_checks`: ``verify`` or
    ``exists``), by the load's :class:`~urlkit.data.picture_checks.PictureChecks`;
    ``picture_share``: the pictures this rank of a DDP run verifies, with ``raise`` only."""

    def __init__(self, on_error: str, check_pictures: str = "verify", picture_share: PictureShare | None = None):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        # skip: every rank must drop the same lines, and the ranks cannot tell each other which
        # pictures they found corrupt before they connect, so each rank verifies every picture
        self.pictures = PictureChecks(check_pictures, picture_share if on_error == "raise" else None)
        self.skipped: Counter[str] = Counter()

    def handle(self, error: DataError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped[error.reason] += 1


def find_data_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.jsonl`` or ``<stem>.jsonl.gz`` inside ``folder``, whichever exists."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def iter_lines(path: Path, policy: ErrorPolicy) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for every line of a UTF-8 file, plain or gzip.

    Lines are read as bytes and decoded one by one, so a byte that is not UTF-8 is a
    DataError naming its line for ``policy`` ("malformed text": skip counts it) rather than a
    UnicodeDecodeError from the middle of the file. A gzip stream cut short (an interrupted
    copy) or a plain file named .gz stops the read with a DataError naming the file and the
    last whole line read: what follows it cannot be read at all. A UTF-8 byte order mark
    opening the file (Windows editors write one) is not part of the first line: ``json``
    refuses it and a TSV would take it into the first id.
    """
    line_no = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as lines:
            for line_no, raw in enumerate(lines, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    policy.handle(DataError(
                        f"malformed text: byte {raw[err.start]:#04x} at byte {err.start + 1} of the "
                        "line is not UTF-8 (save the file as UTF-8)",
                        path=path, line=line_no, reason="malformed text"))  # fmt: skip
                    continue
                yield line_no, text.removeprefix("\ufeff") if line_no == 1 else text
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        read = f"line {line_no} is the last line read whole" if line_no else "not one line could be read"
        raise DataError(f"damaged gzip stream, {read} ({err}): the file is cut short or not gzip; "
                        "copy or compress it again", path=path, reason="damaged gzip") from err


def iter_jsonl(path: Path, policy: ErrorPolicy) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for every non-blank line; bad JSON goes to ``policy``."""
    for line_no, line in iter_lines(path, policy):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            policy.handle(
                DataError(f"malformed JSON ({_where(err)})", path=path, line=line_no,
                          reason="malformed JSON")
            )
            continue
        if not isinstance(record, dict):
            policy.handle(
                DataError(f"expected a JSON object, got {type(record).__name__}",
                          path=path, line=line_no, reason="malformed JSON")
            )
            continue
        yield line_no, record


def read_dataset_info(folder: Path) -> dict[str, str]:
    """``dataset.json`` (optional): ``{"name", "category", "instruction"}``."""
    info_path = folder / "dataset.json"
    info = read_json(info_path) if info_path.is_file() else {}
    for key in ("name", "category", "instruction"):
        if key in info and not isinstance(info[key], str):
            raise DataError(f"field {key!r} must be a string", path=info_path)
    return {"name": folder.name, "category": "", "instruction": "", **info}


def read_json(path: Path) -> dict[str, Any]:
    """A whole-file JSON object (``dataset.json``); a byte order mark opening it is allowed,
    as in the JSONL files."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            value = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg})", path=path, line=err.lineno,
                        reason="malformed JSON") from err
    except UnicodeDecodeError as err:
        raise DataError(f"malformed text: byte {err.object[err.start]:#04x} at byte {err.start + 1} "
                        "of the file is not UTF-8 (save the file as UTF-8)", path=path,
                        reason="malformed text") from err
    if not isinstance(value, dict):
        raise DataError("expected a JSON object", path=path, line=1, reason="malformed JSON")
    return value


class LineFields:
    """Typed access to the fields of one JSONL record, with errors naming file and line;
    ``pictures``: the load's picture checks (None: ``verify``, one picture at a time)."""

    def __init__(self, record: dict[str, Any], path: Path, line: int, pictures: PictureChecks | None = None):
        self.record, self.path, self.line = record, path, line
        self.pictures = pictures

    def error(self, message: str, reason: str) -> DataError:
        return DataError(message, path=self.path, line=self.line, reason=reason)

    def id(self, key: str) -> str:
        """A required id; JSON numbers are accepted and read as strings."""
        if self.record.get(key) is None:
            raise self.error(f"missing required field {key!r}", "missing field")
        value = self.record[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(f"field {key!r} must be a string id, got {value!r}", "invalid field")
        return str(value)

    def text(self, key: str) -> str:
        """An optional string; missing or null reads as ""."""
        value = self.record.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(f"field {key!r} must be a string, got {value!r}", "invalid field")
        return value

    def require(self, key: str) -> Any:
        if key not in self.record or self.record[key] is None:
            raise self.error(f"missing required field {key!r}", "missing field")
        return self.record[key]

    def id_list(self, key: str, *, required: bool = False) -> list[str] | None:
        """A list of doc ids (missing or null -> None unless required)."""
        value = self.require(key) if required else self.record.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
        ):
            raise self.error(f"field {key!r} must be a list of ids, got {value!r}",
                             "invalid field")
        return [str(v) for v in value]

    def image(self, key: str, root: Path) -> str | None:
        """An optional image path relative to ``root``, resolved, checked to exist and (with
        ``check_pictures=verify``) to open as a picture
        (:func:`~urlkit.data.images.picture_problem`: header and checksums, cached): a corrupt
        one is an error naming this line now, or skipped and counted as "unreadable image", not
        found by a batch hours into training. The check was started on a thread when
        :func:`read_records` read the line (:mod:`urlkit.data.picture_checks`)."""
        raw = self.text(key)
        if not raw:
            return None
        pictures = self.pictures or PictureChecks()
        resolved, missing, problem = pictures.finding(root, raw)
        if missing:
            raise self.error(f"image file not found: {raw} (looked at {resolved})",
                             "missing image")
        if problem is not None:
            raise self.error(f"unreadable image {raw} ({resolved}): {problem}", "unreadable image")
        return str(resolved)


def check_document(doc: Document, fields: LineFields) -> Document:
    if doc.empty:
        raise fields.error(f"document {doc.id!r} is empty (no text, title or image)",
                           "empty document")
    return doc


class SkippedDocuments:
    """The ids of corpus lines ``on_error="skip"`` dropped (a missing picture, an empty text),
    and what the queries lost with them. A query that merely lists such a document among its
    candidates or negatives keeps its other documents (one missing emoji picture dropped 14 of
    emoji_t2i's training queries as "unknown doc id"); one that loses every positive is
    skipped as "positive's document skipped"."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.removed = 0  # doc ids taken out of queries' candidates, negatives and judgements
        self.queries = 0  # queries that lost one and were kept

    def remember(self, record: dict[str, Any], id_key: str) -> None:
        value = record.get(id_key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            self.ids.add(str(value))

    def prune(self, query: Query, fields: LineFields) -> None:
        """Take the skipped documents out of ``query`` (in place); a DataError if that leaves it
        no positive."""
        referenced = {*query.qrels, *query.negatives, *(query.candidates or [])}
        if not self.ids or self.ids.isdisjoint(referenced):
            return
        lost = [doc_id for doc_id in query.positives if doc_id in self.ids]
        if lost and len(lost) == len(query.positives):
            raise fields.error(f"query {query.id!r}: the documents of all its positives {lost[:5]} "
                               "were skipped", "positive's document skipped")
        before = len(query.qrels) + len(query.negatives) + len(query.candidates or [])
        query.qrels = {d: grade for d, grade in query.qrels.items() if d not in self.ids}
        query.negatives = [d for d in query.negatives if d not in self.ids]
        if query.candidates is not None:
            query.candidates = [d for d in query.candidates if d not in self.ids]
        self.removed += before - (len(query.qrels) + len(query.negatives) + len(query.candidates or []))
        self.queries += 1

    def notes(self) -> list[str]:
        """For ``Split.notes``: what the kept queries lost."""
        if not self.removed:
            return []
        references = "1 reference" if self.removed == 1 else f"{self.removed} references"
        queries = "1 query" if self.queries == 1 else f"{self.queries} queries"
        return [f"{references} to skipped documents taken out of the candidates, negatives and "
                f"judgements of {queries}"]


def check_query(query: Query, corpus: dict[str, Document], fields: LineFields,
                skipped: SkippedDocuments | None = None) -> Query:
    """Every referenced doc id exists (once ``skipped`` documents are taken out); at least one
    positive (one the corpus lacks will do: such a query is evaluated, never trained on);
    positives inside the pool."""
    if not (query.text.strip() or query.image):
        raise fields.error(f"query {query.id!r} is empty (no text and no image)", "empty query")
    if skipped is not None:
        skipped.prune(query, fields)
    referenced = [*query.qrels, *query.negatives, *(query.candidates or [])]
    unknown = [doc_id for doc_id in dict.fromkeys(referenced) if doc_id not in corpus]
    if unknown:
        raise fields.error(f"query {query.id!r} names unknown doc ids {unknown[:5]}",
                           "unknown doc id")
    if not query.positives and not any(g > 0 for g in query.absent_qrels.values()):
        raise fields.error(f"query {query.id!r} has no positive (no doc with grade > 0)",
                           "no positive")
    if query.candidates is not None:
        pool = set(query.candidates)
        outside = [d for d in query.positives if d not in pool]
        if outside:
            raise fields.error(
                f"query {query.id!r}: positives {outside[:5]} are not in its candidates",
                "positive outside candidates",
            )
    return query


def parses_as(convert: Callable[[str], Any], text: str) -> bool:
    """Whether ``convert(text)`` (``int``, ``float``) reads it: a header cell or a value?"""
    try:
        convert(text)
    except ValueError:
        return False
    return True


def _where(err: json.JSONDecodeError) -> str:
    """``"Unterminated string starting at column 69"``: the message with its column."""
    message = err.msg if err.msg.endswith(" at") else f"{err.msg} at"
    return f"{message} column {err.colno}"


def read_records(
    path: Path, policy: ErrorPolicy, build: Callable[[LineFields], Any], kind: str,
    skipped: SkippedDocuments | None = None, id_key: str = "id", picture: PictureField | None = None,
) -> dict[str, Any]:
    """``{id: build(fields)}`` over the lines of ``path`` (documents or queries).

    A line that ``build`` rejects, or whose id repeats an earlier one, is a ``DataError``
    handed to ``policy`` (raise, or skip and count); the loaders differ only in ``build``,
    which returns None for a line it leaves out on purpose (counted by the loader). The ids
    (``record[id_key]``) of skipped lines that no kept line has go to ``skipped``. ``picture``:
    the field whose picture ``build`` asks about (``fields.image``), checked on threads ahead of
    the line being built (:mod:`urlkit.data.picture_checks`); lines are still built, and their
    errors handed to ``policy``, one by one in file order.
    """
    items: dict[str, Any] = {}
    lines = iter_jsonl(path, policy)
    if picture is not None:
        lines = policy.pictures.ahead(lines, picture)
    try:
        for line_no, record in lines:
            fields = LineFields(record, path, line_no, policy.pictures)
            try:
                item = build(fields)
                if item is None:
                    continue
                if item.id in items:
                    raise fields.error(f"duplicate {kind} id {item.id!r}", "duplicate id")
            except DataError as err:
                policy.handle(err)
                if skipped is not None:
                    skipped.remember(record, id_key)
                continue
            items[item.id] = item
    finally:
        lines.close()  # a load stopped by an error: the checks not yet started are cancelled
    if skipped is not None:
        skipped.ids -= items.keys()
    return items
