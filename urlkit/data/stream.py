"""The order in which training groups are seen: a deterministic, resumable stream.

Item ``j`` of the stream is query ``perm_e[j mod n]`` of epoch ``e = j // n``, where
``perm_e`` is a permutation seeded by (seed, e) and the group's negatives are drawn for
(seed, e, query id). The stream is a function of ``j`` alone, so a resumed run that
starts at ``j = items already consumed`` sees exactly the groups the uninterrupted run
would have seen, whatever happened to the process in between.

Several ranks (data parallel) read one stream through :class:`RankShard`: micro-batch ``k``
of rank ``r`` holds items ``k*R*B + r*B ... k*R*B + r*B + B-1`` (R ranks, B queries per
micro-batch), so the R ranks' micro-batch ``k`` together is micro-batch ``k`` of one process
with R*B queries, in the same order. The shard is a layer over any stream that starts at a
global item and counts items globally (``start_item()``), not a property of this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset

from urlkit.data.groups import TrainGroups


class GroupStream(IterableDataset):
    """An endless stream of training groups; the trainer's ``max_steps`` ends it.

    ``start`` is read when iteration begins (a callable, so a checkpoint restored after the
    DataLoader was built still decides where the stream resumes).
    """

    def __init__(self, groups: TrainGroups, seed: int = 0, start: Callable[[], int] | int = 0):
        self.groups = groups
        self.seed = seed
        self.start = start

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.groups), generator=generator).tolist()

    def item(self, j: int) -> dict:
        n = len(self.groups)
        epoch, position = divmod(j, n)
        self.groups.set_epoch(epoch)
        return self.groups[self.permutation(epoch)[position]]

    def start_item(self) -> int:
        """The global index of the first item the next iteration yields."""
        return int(self.start() if callable(self.start) else self.start)

    def __iter__(self) -> Iterator[dict]:
        j = self.start_item()
        n = len(self.groups)
        epoch, position = divmod(j, n)
        while True:
            self.groups.set_epoch(epoch)
            order = self.permutation(epoch)
            for index in order[position:]:
                yield self.groups[index]
            epoch, position = epoch + 1, 0


class RankShard(IterableDataset):
    """Rank ``rank``'s share of ``stream``: blocks of ``block`` consecutive items, dealt to the
    ``world_size`` ranks in turn (see the module docstring).

    ``stream`` yields items from global index ``stream.start_item()`` on, which must fall on
    a block boundary of all ranks (a resume restarts at a whole optimizer step, which is).
    Every rank walks the whole stream and keeps its blocks: building a group is cheap next
    to scoring it, and no rank needs to know how the stream computes item ``j``.
    """

    def __init__(self, stream, rank: int, world_size: int, block: int):
        if not 0 <= rank < world_size or block < 1:
            raise ValueError(f"rank {rank} of {world_size} ranks, block {block}: not a shard")
        self.stream, self.rank, self.world_size, self.block = stream, rank, world_size, block

    def __iter__(self) -> Iterator[dict]:
        start = self.stream.start_item()
        stride = self.block * self.world_size
        if start % stride:
            raise ValueError(
                f"the stream resumes at item {start}, inside a step of {self.world_size} ranks x "
                f"{self.block} queries: resume with the number of ranks the run was checkpointed with"
            )
        for j, item in enumerate(self.stream, start=start):
            if (j // self.block) % self.world_size == self.rank:
                yield item
