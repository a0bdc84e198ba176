"""Shared-prefix scoring: compute the tokens that several prompts share once, not once per prompt.

A point-wise reranker scores every candidate of a query with the same prompt up to the
document (system turn, instruction, query), and every query of a split with the same system
turn and instruction. On the embedded ``wordsense`` benchmark that prefix is ~77 of ~105
tokens. Causal attention makes sharing it exact: the hidden states (and so the keys and
values) of a prefix do not depend on what follows it, so

    decoder(prefix + continuation_i)[last] == decoder(continuation_i | cache(prefix))[last]

for every i, up to floating-point summation order. A batch is cut into *levels*:

    A  the longest prefix common to all prompts (1 row)
    B  per group of prompts, the further prefix its members share (1 row per group)
    C  the rest of every prompt (1 row per prompt, in the batch's order)

Each level runs through the decoder once, reading the key/value cache of the level before
it (rows gathered by ``parent``); the score is read at the last real token of level C.
Level C is cut into length buckets (a dynamic programme over the rows sorted by length that
minimises padded token slots plus ``call_cost`` slots per extra decoder call): documents of
very different lengths would otherwise pad each other.
Groups are found from the token ids alone (no caller has to say where a prefix ends): the
rows are sorted, and a dynamic programme over the sorted order picks the contiguous groups
that minimise the number of tokens computed (a group of g prompts sharing s tokens saves
(g-1)*s of them).

Every level is RIGHT-padded and gets explicit ``position_ids`` (the count of real tokens
before each one), so a prompt's tokens keep the positions they have alone, and padding
never sits between two real tokens of a prompt in position space. Pure torch; imports
nothing of urlkit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass
class Level:
    """One decoder pass: right-padded token rows, each continuing a row of the level before."""

    input_ids: torch.Tensor  # (rows, width)
    attention_mask: torch.Tensor  # (rows, width), 1 = real token
    parent: torch.Tensor | None  # (rows,) row of the previous level; None for the first level


@dataclass
class PrefixTree:
    """The shared levels of a batch (A, B) and its per-prompt level C, in length buckets."""

    levels: list[Level]  # a chain: each level continues the rows of the one before
    buckets: list[Level]  # level C: every bucket continues rows of levels[-1]
    prompts: list[torch.Tensor]  # per bucket, the batch index of each of its rows
    tokens: int  # token slots the levels compute, padding included
    plain_tokens: int  # token slots of the plain batch (n prompts x longest prompt)


def prefix_tree(input_ids: torch.Tensor, attention_mask: torch.Tensor, min_saving: float = 0.1,
                call_cost: int = 64) -> PrefixTree | None:
    """The shared-prefix levels of a (left- or right-) padded batch, or ``None`` when they
    would save less than ``min_saving`` of the plain batch's token slots (one pass is then
    cheaper than several). ``call_cost``: token slots one more decoder call is worth."""
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids.cpu(), attention_mask.cpu(), strict=True)]
    n = len(rows)
    if n < 2 or min(map(len, rows)) < 2:
        return None
    common = _common_prefix_length(rows)
    common = min(common, min(map(len, rows)) - 1)  # every prompt keeps a last token of its own
    rests = [row[common:] for row in rows]
    groups = _groups(rests)
    levels: list[list[list[int]]] = []  # token rows per level
    parents: list[list[int] | None] = []
    if common:
        levels.append([rows[0][:common]])
        parents.append(None)
    shared = [(members, s) for members, s in groups if len(members) > 1 and s > 0]
    if shared:
        group_rows, prompt_parent = [], [0] * n
        for members, s in groups:
            is_shared = len(members) > 1 and s > 0
            segment = rests[members[0]][:s] if is_shared else []
            if not segment and not common:
                return None  # a first-level row needs a token (nothing to attend to otherwise)
            for member in members:
                prompt_parent[member] = len(group_rows)
                rests[member] = rests[member][len(segment):]
            group_rows.append(segment)
        levels.append(group_rows)
        parents.append([0] * len(group_rows) if common else None)
        levels.append(rests)
        parents.append(prompt_parent)
    elif common:
        levels.append(rests)
        parents.append([0] * n)
    else:
        return None
    device = input_ids.device
    shared_levels = [_level(level, parent, device) for level, parent in zip(levels[:-1], parents[:-1], strict=True)]
    buckets, prompts = [], []
    for members in _length_buckets([len(row) for row in levels[-1]], call_cost):
        parent = None if parents[-1] is None else [parents[-1][i] for i in members]
        buckets.append(_level([levels[-1][i] for i in members], parent, device))
        prompts.append(torch.tensor(members, dtype=torch.long, device=device))
    tokens = sum(level.input_ids.numel() for level in shared_levels + buckets)
    plain = n * max(map(len, rows))
    if tokens > (1 - min_saving) * plain:
        return None
    return PrefixTree(shared_levels, buckets, prompts, tokens, plain)


def run_levels(decoder: torch.nn.Module, tree: PrefixTree) -> torch.Tensor:
    """Final-position hidden states (n_prompts, H) of the prompts of ``tree``, in batch order.

    ``decoder`` is a transformers decoder stack (``LlamaModel``, ``Qwen3Model``, ...) that
    takes ``past_key_values``; the cache of a level is gathered to the rows that continue it
    (differentiable: gradients of shared keys and values add up over the prompts reading them).
    """
    cache, mask, seen = None, None, None
    for level in tree.levels:
        cache, mask, seen, _ = _run(decoder, level, cache, mask, seen)
    finals, order = [], []
    for bucket, prompts in zip(tree.buckets, tree.prompts, strict=True):
        _, _, _, hidden = _run(decoder, bucket, cache, mask, seen)
        last = bucket.attention_mask.sum(dim=1) - 1
        finals.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        order.append(prompts)
    return torch.cat(finals)[torch.cat(order).argsort()]


def _run(decoder, level: Level, cache, mask, seen):
    """One decoder pass of ``level`` over the cache of the level before (if any); returns the
    extended (cache, mask, real-token counts) and the level's hidden states."""
    if level.parent is None:
        mask = level.attention_mask
        start = torch.zeros(len(mask), dtype=torch.long, device=mask.device)
    else:
        cache = _gathered(cache, level.parent)
        mask = torch.cat([mask[level.parent], level.attention_mask], dim=1)
        start = seen[level.parent]
    width = level.input_ids.shape[1]
    positions = start[:, None] + torch.arange(width, device=start.device)[None, :]
    out = decoder(input_ids=level.input_ids, attention_mask=mask, position_ids=positions,
                  past_key_values=cache, use_cache=True)
    return out.past_key_values, mask, start + level.attention_mask.sum(dim=1), out.last_hidden_state


def _gathered(cache, rows: torch.Tensor):
    """A new cache holding ``rows`` of ``cache`` (shallow copies of its layers, so the
    original stays intact for the next bucket; any layer type keeps its own behaviour)."""
    gathered = copy.copy(cache)
    gathered.layers = [copy.copy(layer) for layer in cache.layers]
    gathered.batch_select_indices(rows)
    return gathered


def _level(rows: list[list[int]], parent: list[int] | None, device) -> Level:
    width = max(1, max(map(len, rows)))
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    parent_index = None if parent is None else torch.tensor(parent, dtype=torch.long, device=device)
    return Level(input_ids.to(device), attention_mask.to(device), parent_index)


def _common_prefix_length(rows: list[list[int]]) -> int:
    first, length = rows[0], min(map(len, rows))
    for row in rows[1:]:
        k = 0
        while k < length and row[k] == first[k]:
            k += 1
        length = k
    return length


def _groups(rests: list[list[int]]) -> list[tuple[list[int], int]]:
    """Contiguous groups of the sorted rows that minimise the tokens computed, as
    (member indices, shared length); a shared length leaves every member >= 1 token."""
    order = sorted(range(len(rests)), key=lambda i: rests[i])
    sorted_rows = [rests[i] for i in order]
    lengths = [len(row) for row in sorted_rows]
    adjacent = [_common_prefix_length(pair) for pair in zip(sorted_rows, sorted_rows[1:], strict=False)]
    n = len(order)
    best = [0] * (n + 1)  # best[j]: fewest tokens for the first j sorted rows
    choice = [(0, 0)] * (n + 1)  # (start of the last group, its shared length)
    for j in range(1, n + 1):
        best[j], choice[j] = best[j - 1] + lengths[j - 1], (j - 1, 0)
        shared, shortest, total = None, lengths[j - 1], lengths[j - 1]
        for i in range(j - 2, -1, -1):  # the group sorted_rows[i:j]
            shared = adjacent[i] if shared is None else min(shared, adjacent[i])
            shortest, total = min(shortest, lengths[i]), total + lengths[i]
            s = min(shared, shortest - 1)
            if s <= 0:
                break
            cost = best[i] + total - (j - i - 1) * s
            if cost < best[j]:
                best[j], choice[j] = cost, (i, s)
    groups, j = [], n
    while j > 0:
        i, s = choice[j]
        groups.append(([order[k] for k in range(i, j)], s))
        j = i
    return groups[::-1]


def _length_buckets(lengths: list[int], call_cost: int) -> list[list[int]]:
    """Rows grouped into contiguous runs of the length order, minimising
    sum(rows x longest row) + call_cost per run."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best, start = [0] + [0] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        best[j], start[j] = min((best[i] + (j - i) * longest + call_cost, i) for i in range(j))
    buckets, j = [], len(order)
    while j > 0:
        buckets.append(order[start[j]:j])
        j = start[j]
    return buckets[::-1]
