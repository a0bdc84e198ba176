"""Training mixtures: several training sets in one stream, each drawn with its own weight.

The paper trains on a subset balanced over task types (about 270K pairs, Appendix C.1):
every source gets the same share of the stream whatever its size, which is the default
here (weight 1 each); other weights give shares proportional to them.

The stream is a function of the global item index ``j`` alone, like
:class:`~urlkit.data.stream.GroupStream`, so it resumes exactly and any layer over a stream
(``RankShard`` deals items to ranks by ``j``) works on it unchanged:

* items are dealt in blocks of ``block`` items; block ``b`` holds exactly ``counts[s]`` items
  of source ``s`` (the weights' shares of ``block``, largest remainders first), in an order
  shuffled by (seed, b);
* the ``k``-th item of source ``s`` in the mixture is item ``k`` of that source's own
  :class:`GroupStream` (its queries reshuffled every epoch of that source, negatives drawn
  per (seed, epoch, query id)).

A small source is therefore repeated more often than a large one (several of its epochs per
epoch of the other), as sampling by weight implies. Items carry ``"source"``; the
:class:`~urlkit.data.groups.GroupCollator` built with ``sources=`` renders each against its
own split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import IterableDataset

from urlkit.data.groups import TrainGroups
from urlkit.data.stream import GroupStream
from urlkit.errors import ConfigError


@dataclass
class Source:
    """One training set of a mixture: its name (used in logs), groups and sampling weight."""

    name: str
    groups: TrainGroups
    weight: float = 1.0


def block_counts(weights: list[float], block: int) -> list[int]:
    """Items per source in a block of ``block``: shares of the weights, rounded by largest
    remainder (sum exactly ``block``), at least one item for every source with weight > 0."""
    total = float(sum(weights))
    if block < 1 or not weights or total <= 0 or any(w < 0 for w in weights):
        raise ConfigError(f"weights {weights} and block {block}: need weights >= 0 with a positive sum")
    exact = [block * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))[: block - sum(counts)]:
        counts[i] += 1
    for i, w in enumerate(weights):
        if w > 0 and counts[i] == 0:
            raise ConfigError(f"block {block} is too small to give weight {w} (source {i}) one item per block")
    return counts


class MixtureStream(IterableDataset):
    """An endless, resumable stream over several sources (see the module docstring).

    ``start`` (an int or a callable read when iteration begins) is the global item index
    the next iteration starts at, as for :class:`GroupStream`.
    """

    def __init__(self, sources: list[Source], seed: int = 0, start: Callable[[], int] | int = 0, block: int = 1000):
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"mixture sources need distinct names, got {names}")
        self.sources, self.seed, self.start, self.block = sources, seed, start, block
        self.counts = block_counts([s.weight for s in sources], block)
        self.streams = [GroupStream(s.groups, seed=seed) for s in sources]
        self._block_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._permutations: dict[tuple[int, int], list[int]] = {}

    def start_item(self) -> int:
        """The global index of the first item the next iteration yields."""
        return int(self.start() if callable(self.start) else self.start)

    def assignment(self, block_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each position, that item's index among the block's items of its source)."""
        if self._block_cache is None or self._block_cache[0] != block_index:
            order = np.repeat(np.arange(len(self.sources)), self.counts)
            np.random.default_rng([self.seed, block_index, 0x6D6978]).shuffle(order)
            rank = np.zeros(len(order), dtype=np.int64)
            seen = np.zeros(len(self.sources), dtype=np.int64)
            for position, source in enumerate(order):
                rank[position] = seen[source]
                seen[source] += 1
            self._block_cache = (block_index, order, rank)
        return self._block_cache[1], self._block_cache[2]

    def locate(self, j: int) -> tuple[int, int]:
        """Item ``j`` of the mixture is item ``k`` of source ``s``: returns (s, k)."""
        block_index, position = divmod(j, self.block)
        order, rank = self.assignment(block_index)
        source = int(order[position])
        return source, block_index * self.counts[source] + int(rank[position])

    def item(self, j: int) -> dict:
        source, k = self.locate(j)
        groups = self.sources[source].groups
        epoch, position = divmod(k, len(groups))
        key = (source, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 4 * len(self.sources):
                self._permutations.clear()
            self._permutations[key] = self.streams[source].permutation(epoch)
        groups.set_epoch(epoch)
        return {**groups[self._permutations[key][position]], "source": self.sources[source].name}

    def items_per_source(self, n_items: int) -> dict[str, int]:
        """How many of the first ``n_items`` items came from each source (for the logs)."""
        full, partial = divmod(n_items, self.block)
        seen = Counter(self.assignment(full)[0][:partial].tolist()) if partial else Counter()
        return {s.name: full * self.counts[i] + seen[i] for i, s in enumerate(self.sources)}

    def report(self) -> str:
        shares = ", ".join(
            f"{s.name} {count / self.block:.1%} ({len(s.groups)} queries)"
            for s, count in zip(self.sources, self.counts, strict=True)
        )
        return f"training mixture of {len(self.sources)} sources, shares per block of {self.block}: {shares}"

    def __iter__(self) -> Iterator[dict]:
        j = self.start_item()
        while True:
            yield self.item(j)
            j += 1
