"""A manual page as plain text: rendering with mandoc, sections, paragraphs, NAME, SEE ALSO.

Why render instead of stripping roff macros: the Linux man-pages use man(7) macros, font
escapes, tbl(1) tables, conditionals and string definitions; a formatter resolves all of them,
a regular expression resolves some. mandoc (Debian package ``mandoc``) is a single fast
program with deterministic output and no locale or pager involved. We ask it for UTF-8 text
1,000 columns wide, so that a paragraph is (nearly always) one line, and remove its overstrike
(``X\\bX`` bold, ``_\\bX`` underline). In that text a section heading is a line starting in
column 0 written in capitals, paragraphs are separated by blank lines, and the first and last
non-blank lines are the page header and footer.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from urlkit.datasets.build import DatasetBuildError

OVERSTRIKE = re.compile(".\b")
PAGE_REFERENCE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.:+-]*)\((\d[a-z]*)\)")
NAME_SEPARATOR = re.compile(r"\s+[-\u2010\u2212\u2013\u2014]\s+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ManPage:
    """The parts of one rendered page the benchmark uses."""

    names: tuple[str, ...]  # from the NAME line: ("printf", "fprintf", ...)
    description: str  # NAME line after the dash: "formatted output conversion"
    sections: dict[str, list[str]]  # heading -> paragraphs (whitespace collapsed)
    see_also: tuple[tuple[str, str], ...]  # (name, section) pairs, in page order


def render(path: Path) -> str:
    """Plain UTF-8 text of the man page source ``path`` (gzip is fine), via mandoc."""
    if shutil.which("mandoc") is None:
        raise DatasetBuildError("`mandoc` not found; install the Debian package mandoc "
                                "(scripts/build_data.sh does)")
    result = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=1000", str(path)],
                            capture_output=True, check=False)
    text = OVERSTRIKE.sub("", result.stdout.decode("utf-8", errors="replace"))
    if not text.strip():  # mandoc exits non-zero on mere warnings; only no output is fatal
        raise DatasetBuildError(f"mandoc rendered nothing ({result.stderr.decode().strip()})",
                                path=path)
    return text


def split_sections(text: str) -> dict[str, list[str]]:
    """``{heading: [paragraph, ...]}`` of rendered text, header and footer lines removed."""
    lines = text.strip("\n").split("\n")[1:-1]
    sections: dict[str, list[str]] = {}
    paragraphs: list[str] | None = None
    current: list[str] = []
    for line in [*lines, ""]:
        heading = line[:1].strip() and line == line.upper() and re.search(r"[A-Z]", line)
        if heading or not line.strip():
            if current and paragraphs is not None:
                paragraphs.append(WHITESPACE.sub(" ", " ".join(current)).strip())
            current = []
            if heading:
                paragraphs = sections.setdefault(WHITESPACE.sub(" ", line).strip(), [])
        else:
            current.append(line)
    return sections


def parse_page(text: str, *, path: Path | None = None) -> ManPage:
    """Names, description, sections and SEE ALSO references of a rendered page."""
    sections = split_sections(text)
    name_line = " ".join(sections.get("NAME", []))
    parts = NAME_SEPARATOR.split(name_line, maxsplit=1)
    if len(parts) != 2 or not parts[1].strip():
        raise DatasetBuildError(f"no 'names - description' NAME line (got {name_line!r})",
                                path=path)
    names = tuple(n.strip() for n in parts[0].split(",") if n.strip())
    see_also = tuple(PAGE_REFERENCE.findall(" ".join(sections.get("SEE ALSO", []))))
    return ManPage(names, parts[1].strip(), sections, see_also)


def capped(paragraphs: list[str], max_chars: int) -> str:
    """Paragraphs joined by single spaces, cut at the last word boundary before ``max_chars``."""
    text = " ".join(paragraphs)
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > 0 else max_chars]


def first_sentence(paragraph: str) -> str:
    """The paragraph up to its first sentence end followed by a capital or a parenthesis."""
    return SENTENCE_END.split(paragraph, maxsplit=1)[0]


def mentions(sentence: str, names: tuple[str, ...]) -> bool:
    """Does the sentence name one of the page's own functions, types or files?

    A name counts when written as a call or a page reference (``open()``, ``open(2)``), as
    the sentence's first word (``tmpfs is a filesystem ...``), or anywhere as a word when it
    could not be an English word (``_exit``, ``utf-8``); a bare ``open`` inside "if the
    file is open" does not count.
    """
    for name in names:
        word = rf"(?<![\w/.-]){re.escape(name)}(?![\w-])"
        if re.search(rf"(?<![\w/.-]){re.escape(name)}\(", sentence) or re.match(word, sentence):
            return True
        if not name.isalpha() and re.search(word, sentence):
            return True
    return False


def so_target(path: Path) -> str | None:
    """For a ``.so man7/x.7`` redirection page: the target ``man7/x.7``, else None."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(".so "):
                return line[4:].strip()
            if not line.startswith(('.\\"', "'\\\"")) and line.strip():
                return None
    return None
