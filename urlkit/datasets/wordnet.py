"""Reading WordNet 3.0's database files (Debian package ``wordnet-base``).

Three kinds of file, one per part of speech (noun, verb, adj, adv), described in
wndb(5WN):

* ``data.<pos>``: one synset per line::

      00169305 04 n 01 bank 0 003 @ 00170844 n 0000 ... | a flight maneuver; ...; "the plane went into a steep bank"

  offset, lexicographer file, synset type, word count (hex), then (word, lex_id) pairs,
  pointers, and after ``|`` the gloss: a definition followed by ``; "quoted examples"``.
* ``index.<pos>``: ``lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets...``,
  the offsets being the lemma's senses, most frequent first.
* ``<pos>.exc``: morphological exceptions, ``inflected base [base...]`` (``ran run``).

Lines of the licence header start with two spaces and are skipped. Lemmas use ``_`` for
spaces and adjectives may carry a syntactic marker (``galore(ip)``); both are normalised
here: lemmas are lower case with single spaces.

:class:`Morphology` recognises an inflected sentence token as a lemma the way WordNet's own
``morphy`` does (wnintro(7WN), "morphy"): the exception list, then suffix detachment rules
(``ies -> y``, ``ed -> ""``, ``ing -> e`` ...), without checking the result against the
index (we only ask "can this token be an inflection of *that* lemma?").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from urlkit.datasets.build import DatasetBuildError

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

# WordNet's morphy detachment rules (suffix -> replacement), per part of speech.
SUFFIX_RULES = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
          ("shes", "sh"), ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass(frozen=True)
class Synset:
    """One line of ``data.<pos>``: its lemmas and its gloss, split into definition and examples."""

    id: str  # part of speech letter + offset, e.g. "n09213565"
    pos: str  # "n", "v", "a" (heads and satellites alike) or "r"
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; an apostrophe stays inside a token (``o'clock``), a hyphen
    splits (``well-known`` -> ``well``, ``known``), in lemmas and sentences alike."""
    return TOKEN.findall(text.lower())


def normalise_lemma(raw: str) -> str:
    return MARKER.sub("", raw).replace("_", " ").lower()


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """``'a bank; "he sat on the bank"; "x"'`` -> ``('a bank', ('he sat on the bank', 'x'))``.

    The definition ends where the first quoted example starts; anything between quotes
    after that is an example (attributions such as ``--Shakespeare`` are dropped).
    """
    first_quote = re.search(r';\s*"', gloss)
    if first_quote is None:
        return gloss.strip().rstrip(";").strip(), ()
    definition = gloss[: first_quote.start()].strip()
    examples = tuple(e.strip() for e in re.findall(r'"([^"]+)"', gloss[first_quote.start():]))
    return definition, tuple(e for e in examples if e)


def read_synsets(path: Path, pos: str) -> Iterator[Synset]:
    """Every synset of one ``data.<pos>`` file."""
    for line_no, line in _lines(path):
        head, bar, gloss = line.partition(" | ")
        fields = head.split()
        try:
            offset, n_words = fields[0], int(fields[3], 16)
            lemmas = tuple(normalise_lemma(fields[4 + 2 * i]) for i in range(n_words))
        except (IndexError, ValueError) as err:
            raise DatasetBuildError(f"not a WordNet data line ({err})", path=path,
                                    line=line_no) from err
        definition, examples = split_gloss(gloss) if bar else ("", ())
        yield Synset(f"{pos}{offset}", pos, lemmas, definition, examples)


def read_index(path: Path, pos: str) -> dict[str, list[str]]:
    """``{lemma: [synset id, ...]}`` in WordNet's sense order (most frequent first)."""
    senses = {}
    for line_no, line in _lines(path):
        fields = line.split()
        try:
            n_synsets, n_pointers = int(fields[2]), int(fields[3])
            offsets = fields[6 + n_pointers:]
        except (IndexError, ValueError) as err:
            raise DatasetBuildError(f"not a WordNet index line ({err})", path=path,
                                    line=line_no) from err
        if len(offsets) != n_synsets:
            raise DatasetBuildError(f"{n_synsets} senses announced, {len(offsets)} listed",
                                    path=path, line=line_no)
        senses[normalise_lemma(fields[0])] = [f"{pos}{offset}" for offset in offsets]
    return senses


def read_exceptions(path: Path) -> dict[str, set[str]]:
    """``{inflected form: {base forms}}`` from a ``<pos>.exc`` file."""
    exceptions: dict[str, set[str]] = {}
    for _, line in _lines(path):
        inflected, *bases = line.split()
        exceptions.setdefault(normalise_lemma(inflected), set()).update(
            normalise_lemma(b) for b in bases
        )
    return exceptions


class Morphology:
    """Which base forms a sentence token may be an inflection of, per part of speech."""

    def __init__(self, exceptions: dict[str, dict[str, set[str]]]):
        self.exceptions = exceptions  # pos -> inflected -> bases

    def base_forms(self, token: str, pos: str) -> set[str]:
        forms = {token}
        for possessive in ("'s", "'"):  # "bank's" -> "bank"
            if token.endswith(possessive) and len(token) > len(possessive):
                forms.add(token[: -len(possessive)])
        for form in list(forms):
            forms.update(self.exceptions.get(pos, {}).get(form, ()))
            for suffix, replacement in SUFFIX_RULES[pos]:
                if form.endswith(suffix) and len(form) > len(suffix):
                    forms.add(form[: -len(suffix)] + replacement)
        return forms

    def occurs(self, lemma: str, sentence_tokens: list[str], pos: str) -> bool:
        """Does ``lemma`` (one or more tokens) occur, each token possibly inflected?"""
        target = tokens(lemma)
        if not target:
            return False
        width = len(target)
        for start in range(len(sentence_tokens) - width + 1):
            window = sentence_tokens[start:start + width]
            if all(t == w or t in self.base_forms(w, pos) for t, w in zip(target, window, strict=True)):
                return True
        return False


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DatasetBuildError("WordNet file not found; install the Debian package "
                                "wordnet-base (scripts/build_data.sh)", path=path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.startswith("  ") or not line.strip():  # licence header
                continue
            yield line_no, line.rstrip("\n")
