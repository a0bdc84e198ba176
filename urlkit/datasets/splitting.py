"""Deterministic train/dev/test assignment of whole groups (a word, a manual page).

Everything that shares a group key lands in one split, so no word (no page) is seen in
training and tested on. Groups are visited in the order of a keyed hash of their key --
a fixed pseudo-random order that depends on nothing but the key -- and poured into the
evaluation splits until each holds at least its target number of queries; every group
left over goes to training. The sizes of dev and test are thus hit to within one group,
and adding a group to the source moves no other group from one split to another unless
it lands before them in hash order.
"""

from __future__ import annotations

import hashlib

HASH_SALT = "urlkit-split-v1"


def stable_hash(key: str) -> int:
    """A 64-bit integer from SHA-256 of ``salt:key``: the same on every machine and run."""
    digest = hashlib.sha256(f"{HASH_SALT}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign_groups(
    query_counts: dict[str, int], targets: dict[str, int], rest: str = "train"
) -> dict[str, str]:
    """``{group key: split}``.

    ``query_counts[key]`` is how many evaluation queries the group would contribute;
    ``targets`` (e.g. ``{"test": 500, "dev": 400}``, filled in that order) the minimum
    number of queries per evaluation split (a target of 0 leaves that split empty). Groups
    that contribute 0 queries never count towards a target and go to ``rest``.
    """
    order = sorted(query_counts, key=lambda key: (stable_hash(key), key))
    assignment: dict[str, str] = {}
    filled = dict.fromkeys(targets, 0)
    pending = [split for split, target in targets.items() if target > 0]
    for key in order:
        count = query_counts[key]
        if pending and count > 0:
            split = pending[0]
            assignment[key] = split
            filled[split] += count
            if filled[split] >= targets[split]:
                pending.pop(0)
        else:
            assignment[key] = rest
    return assignment
