"""N negatives per query: hard ones from the first stage, random ones from the corpus.

Paper, Appendix C.3: negatives are drawn 1:1 at random and from the first-stage retriever's
top-100 minus the positives. Here, for one query and ``n`` negatives:

    n_hard   = floor(n * hard_fraction + 1/2)
    hard     ~ uniform without replacement from  H = (top-``hard_depth`` of the ranking
               + the query's explicit ``negatives``) - positives
    random   ~ uniform without replacement from  R - positives - hard
    R        = the query's own ``candidates`` pool if it has one, else the whole corpus
               (``random_from="corpus"``, config ``data.random_from=corpus``: always the corpus)

Random negatives come from the query's pool when it has one because the pool *is* the
task (all senses of a word, all options of a question): a document from outside it is
never shown at evaluation time and is trivially irrelevant, so it teaches nothing. The
paper's probing mix draws its random half from the whole corpus, hence ``random_from``; on a
pooled dataset (wordsense) the pool mix is 1:1 in name only (random and hard come from the
same few documents).
When one kind runs short the other tops it up; when both do, fewer than ``n`` come back
and the training group pads (see ``groups.py``). Positives (grade > 0) are never negatives;
judged non-relevant documents (grade 0) may be. Nor is any ``held_out`` document, hard or
random: those the dataset's dev and test queries judge (``Split.held_out``), since one corpus
serves every split and a test's answer shown as a training negative is a leak. The list holds
the hard negatives first, then the random ones, without duplicates.

Determinism: :func:`query_rng` seeds one generator per (seed, epoch, query id) from a stable
hash (blake2b; Python's ``hash()`` changes with every process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import numpy as np

from urlkit.data.format import Query


def query_rng(seed: int, epoch: int, query_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, query id)."""
    key = f"{seed}\x1f{epoch}\x1f{query_id}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(),
                                                "little"))


def sample_negatives(
    query: Query,
    ranking: Sequence[tuple[str, float]] | None,
    corpus_ids: Sequence[str],
    n: int,
    hard_fraction: float = 0.5,
    hard_depth: int = 100,
    rng: np.random.Generator | None = None,
    random_from: str = "pool",
    held_out: Collection[str] = frozenset(),
) -> list[str]:
    """Up to ``n`` negative doc ids for ``query`` (see the module docstring).

    ``ranking`` is the query's first-stage list ``[(doc id, score), ...]`` (None: no
    retriever, only explicit negatives are hard); ``corpus_ids`` all doc ids of the split
    (:class:`~urlkit.data.groups.TrainGroups` passes them without ``held_out``, filtered once);
    ``held_out``: ids that are never negatives (a set: looked up per candidate).
    """
    if rng is None:
        raise ValueError("pass rng=query_rng(seed, epoch, query.id) for reproducible negatives")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    if n <= 0:
        return []
    positives = set(query.positives)
    ranked = [doc_id for doc_id, _ in (ranking or [])[:hard_depth]]
    hard_pool = [d for d in dict.fromkeys([*ranked, *query.negatives]) if d not in positives and d not in held_out]
    pool = query.candidates if random_from == "pool" else None
    random_pool = corpus_ids if pool is None else [d for d in pool if d not in held_out]

    # rounded first: 25 x 0.58 is 14.499999999999998 in floating point, and floor(N h + 1/2) is 15
    n_hard = min(int(np.floor(round(n * hard_fraction, 9) + 0.5)), len(hard_pool))
    hard = [hard_pool[i] for i in rng.permutation(len(hard_pool))[:n_hard]]
    taken = positives | set(hard)
    random = _draw_distinct(random_pool, n - n_hard, taken, rng, held_out)
    negatives = hard + random
    if len(negatives) < n:  # the random pool ran short: top up with more hard negatives
        taken.update(random)
        spare = [d for d in hard_pool if d not in taken]
        negatives += [spare[i] for i in rng.permutation(len(spare))[: n - len(negatives)]]
    return negatives


def _draw_distinct(
    pool: Sequence[str], m: int, excluded: set[str], rng: np.random.Generator,
    held_out: Collection[str] = frozenset(),
) -> list[str]:
    """``m`` distinct ids of ``pool`` in neither ``excluded`` nor ``held_out`` (fewer if the
    pool runs out).

    A large pool (the corpus) is sampled by rejection, which costs O(m) instead of O(|pool|);
    a small one (or a rejection run that keeps missing) is enumerated exactly.
    """
    if m <= 0:
        return []
    if len(pool) > 4 * (m + len(excluded)) + 64:
        drawn: dict[str, None] = {}
        for _ in range(8):
            for i in rng.integers(0, len(pool), size=2 * m):
                doc_id = pool[int(i)]
                if doc_id not in excluded and doc_id not in held_out:
                    drawn[doc_id] = None
                    if len(drawn) == m:
                        return list(drawn)
    allowed = [d for d in dict.fromkeys(pool) if d not in excluded and d not in held_out]
    return [allowed[i] for i in rng.permutation(len(allowed))[:m]]
