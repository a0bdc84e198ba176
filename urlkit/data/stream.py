"""The order in which training groups are seen: a deterministic, resumable stream.

Item ``j`` of the stream is query ``perm_e[j mod n]`` of epoch ``e = j // n``, where
``perm_e`` is a permutation seeded by (seed, e) and the group's negatives are drawn for
(seed, e, query id). The stream is a function of ``j`` alone, so a resumed run that
starts at ``j = items already consumed`` sees exactly the groups the uninterrupted run
would have seen, whatever happened to the process in between.
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

    def __iter__(self) -> Iterator[dict]:
        j = self.start() if callable(self.start) else self.start
        n = len(self.groups)
        epoch, position = divmod(j, n)
        while True:
            self.groups.set_epoch(epoch)
            order = self.permutation(epoch)
            for index in order[position:]:
                yield self.groups[index]
            epoch, position = epoch + 1, 0
