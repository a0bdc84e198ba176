"""wordsense: word-sense disambiguation as reranking, built from WordNet 3.0.

Query   ``word: bank | sentence: they pulled the canoe up on the bank``
        -- an example sentence of a synset with the lemma of that synset it uses.
Pool    the definitions of *every* sense of that word in that part of speech (natural hard
        negatives: same word, other meanings), capped at ``pool_size`` documents, the
        positive always kept, the others by WordNet's sense order (most frequent first),
        then stored sorted by id so the order says nothing about the answer.
Answer  the synset's own definition (grade 1). A document is a definition only: adding the
        synset's lemmas would name the word in every candidate and say nothing new.

The target word is the first lemma of the synset, in WordNet's order, that occurs in the
sentence -- possibly inflected, as recognised by :class:`~urlkit.datasets.wordnet.Morphology`
(exception lists + morphy's suffix rules) -- and has at least two senses in that part of
speech. Dropped, and counted: examples with no such lemma, queries whose pool holds another
sense with the very same definition (no way to tell them apart), and a (word, part of
speech, sentence) triple given as the example of two different synsets.

Splits are by word (``bank`` the noun and ``bank`` the verb together): see
:mod:`urlkit.datasets.splitting`. Run::

    python -m urlkit.datasets.wordsense --out data/wordsense --report
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from urlkit.datasets.bm25_report import print_report
from urlkit.datasets.build import BuiltDataset, DatasetBuildError, build_date, write_dataset
from urlkit.datasets.debian import package_versions
from urlkit.datasets.splitting import assign_groups
from urlkit.datasets.wordnet import (
    POS_FILES,
    Morphology,
    Synset,
    read_exceptions,
    read_index,
    read_synsets,
    tokens,
)

NAME = "wordsense"
CATEGORY = "T2T"
INSTRUCTION = (
    "Given a target word and a sentence that uses it, retrieve the dictionary definition "
    "of the sense in which the sentence uses the word."
)
PACKAGES = ["wordnet-base"]
WORDNET_DIR = Path("/usr/share/wordnet")
LICENCE_FILE = Path("/usr/share/doc/wordnet-base/copyright")


def build_wordsense(
    wordnet_dir: str | Path = WORDNET_DIR,
    *,
    pool_size: int = 25,
    test_queries: int = 500,
    dev_queries: int = 400,
) -> BuiltDataset:
    """The wordsense benchmark from the WordNet database files in ``wordnet_dir``."""
    if pool_size < 2:
        raise ValueError(f"pool_size must be at least 2 (a positive and a negative), got {pool_size}")
    wordnet_dir = Path(wordnet_dir)
    synsets: dict[str, Synset] = {}
    senses: dict[str, dict[str, list[str]]] = {}
    exceptions = {}
    for pos, suffix in POS_FILES.items():
        synsets.update((s.id, s) for s in read_synsets(wordnet_dir / f"data.{suffix}", pos))
        senses[pos] = read_index(wordnet_dir / f"index.{suffix}", pos)
        exc = wordnet_dir / f"{suffix}.exc"
        exceptions[pos] = read_exceptions(exc) if exc.is_file() else {}
    for pos, index in senses.items():
        for lemma, ids in index.items():
            missing = [i for i in ids if i not in synsets]
            if missing:
                raise DatasetBuildError(
                    f"index entry {lemma!r} points to synsets missing from data.{POS_FILES[pos]}: "
                    f"{missing[:3]}", path=wordnet_dir / f"index.{POS_FILES[pos]}")

    queries, word_of, skipped = _example_queries(synsets, senses, Morphology(exceptions), pool_size)
    counts = Counter(word_of.values())
    split_of_word = assign_groups(dict(counts), {"test": test_queries, "dev": dev_queries})
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for query in queries:
        splits[split_of_word[word_of[query["id"]]]].append(query)

    used = sorted({doc_id for q in queries for doc_id in q["candidates"]})
    corpus = [{"id": doc_id, "text": synsets[doc_id].definition} for doc_id in used]
    return BuiltDataset(
        name=NAME,
        category=CATEGORY,
        instruction=INSTRUCTION,
        corpus=corpus,
        splits=splits,
        provenance={"source": str(wordnet_dir), "pool_size": pool_size},
        stats={
            "synsets": len(synsets),
            "examples": sum(len(s.examples) for s in synsets.values()),
            "queries": len(queries),
            "words": len(counts),
            "skipped": dict(sorted(skipped.items())),
        },
    )


@dataclass
class ExampleQueries:
    """Turns the example sentences of a synset into queries (rules: module docstring)."""

    synsets: dict[str, Synset]
    senses: dict[str, dict[str, list[str]]]  # pos -> lemma -> synset ids, sense order
    morphology: Morphology
    pool_size: int
    skipped: Counter = field(default_factory=Counter)

    def of(self, synset: Synset) -> list[tuple[str, str, dict]]:
        """``(word, normalised sentence, query)`` for each usable example of ``synset``."""
        index = self.senses[synset.pos]
        found = []
        for k, sentence in enumerate(synset.examples):
            sentence_tokens = tokens(sentence)
            in_sentence = [
                lemma for lemma in synset.lemmas
                if self.morphology.occurs(lemma, sentence_tokens, synset.pos)
            ]
            polysemous = [lemma for lemma in in_sentence if len(index.get(lemma, ())) >= 2]
            if not polysemous:
                self.skipped["monosemous word" if in_sentence else "no lemma in the sentence"] += 1
                continue
            word = polysemous[0]
            pool = _pool(synset.id, index[word], self.pool_size)
            definition = synset.definition.lower()
            if not definition or any(
                self.synsets[other].definition.lower() == definition
                for other in pool if other != synset.id
            ):
                self.skipped["definition shared by two senses in the pool"] += 1
                continue
            found.append((word, " ".join(sentence_tokens), {
                "id": f"{synset.id}.{k}",
                "text": f"word: {word} | sentence: {sentence}",
                "positives": {synset.id: 1},
                "candidates": pool,
            }))
        return found


def _example_queries(
    synsets: dict[str, Synset],
    senses: dict[str, dict[str, list[str]]],
    morphology: Morphology,
    pool_size: int,
) -> tuple[list[dict], dict[str, str], Counter]:
    """One query per usable example sentence; also ``{query id: word}`` and skip counts."""
    make = ExampleQueries(synsets, senses, morphology, pool_size)
    drafts: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for synset in synsets.values():
        for word, sentence, query in make.of(synset):
            drafts[(word, synset.pos, sentence)].append(query)

    queries, word_of, skipped = [], {}, make.skipped
    for (word, _, _), same_sentence in drafts.items():
        if len({next(iter(q["positives"])) for q in same_sentence}) > 1:
            skipped["same sentence and word in two synsets"] += len(same_sentence)
            continue
        query = same_sentence[0]  # a repeated example of one synset counts once
        skipped["repeated example"] += len(same_sentence) - 1
        queries.append(query)
        word_of[query["id"]] = word
    queries.sort(key=lambda q: q["id"])
    return queries, word_of, +skipped  # unary + drops zero counts


def _pool(positive: str, word_senses: list[str], pool_size: int) -> list[str]:
    """The positive plus the most frequent other senses, ``pool_size`` at most, sorted by id."""
    others = [s for s in word_senses if s != positive][: pool_size - 1]
    return sorted([positive, *others])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m urlkit.datasets.wordsense",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="dataset folder to write (e.g. data/wordsense)")
    parser.add_argument("--wordnet-dir", type=Path, default=WORDNET_DIR,
                        help="the WordNet 3.0 database files (default: %(default)s, from wordnet-base)")
    parser.add_argument("--pool-size", type=int, default=25,
                        help="most candidates (senses of the word) per query (default: %(default)s)")
    parser.add_argument("--test-queries", type=int, default=500, help="test queries (default: %(default)s)")
    parser.add_argument("--dev-queries", type=int, default=400, help="dev queries (default: %(default)s)")
    parser.add_argument("--report", action="store_true",
                        help="print split sizes and BM25's scores within each candidate pool")
    args = parser.parse_args(argv)
    try:
        versions = package_versions(PACKAGES)
        dataset = build_wordsense(args.wordnet_dir, pool_size=args.pool_size,
                                  test_queries=args.test_queries, dev_queries=args.dev_queries)
    except DatasetBuildError as err:
        sys.exit(f"error: {err}")
    dataset.provenance = {
        "debian_packages": versions,
        "command": shlex.join(["python", "-m", "urlkit.datasets.wordsense", *(argv or sys.argv[1:])]),
        "built": build_date(),
        "licence": "WordNet 3.0 license (Princeton University), see LICENSE",
        **dataset.provenance,
    }
    dataset.attachments = {"LICENSE": LICENCE_FILE}  # the licence asks to travel with copies
    if args.out:
        write_dataset(dataset, args.out)
        print(f"wrote {args.out}")
    print_report(dataset, pool="candidates" if args.report else None)


if __name__ == "__main__":
    main()
