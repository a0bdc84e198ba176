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
    C  the rest of every prompt, PACKED: the continuations of one group side by side in
       rows of up to ``pack_length`` tokens, each attending to its group's prefix and,
       causally, to itself only (a block-diagonal mask)

When every row of the last shared level is continued by exactly one packed row (one query's
candidates in a training step, in a row of up to ``FOLD_WIDTH * pack_length`` tokens; a few
candidates per query at evaluation), that level is
FOLDED into level C: its tokens open the packed row, attended to by every continuation in it.
Nothing is computed twice, and one decoder pass with taller matrix products replaces two
(a 1+4 training step of the default experiment: ~10% faster, docs/performance.md).
When the whole batch fits one row of up to ``ONE_ROW_WIDTH * pack_length`` tokens (a
training step's 1+4 or 1+16 prompts), every level goes
into it: the common prefix (read by all), each group's prefix (read by its members only),
then the continuations; one decoder pass instead of two or three where candidates share the
opening of their documents (a quarter of the default experiment's steps, each ~2x slower
before; docs/performance.md "Session 6").

Each level runs through the decoder once, reading the key/value cache of the level before
it (rows gathered by ``parent``); the score is read at the last token of each packed
continuation. Packing keeps level C free of padding (documents of different lengths would
otherwise pad each other, a quarter of level C's token slots on wordsense) and its matrix
products tall; ``pack_length`` bounds the attention a block-diagonal mask wastes. Rows of
packs go through the decoder in length buckets (a dynamic programme over the rows sorted by
length that minimises padded token slots plus ``call_cost`` slots per extra decoder call).
Groups are found from the token ids alone (no caller has to say where a prefix ends): the
rows are sorted, and a dynamic programme over the sorted order picks the contiguous groups
that minimise the number of tokens computed (a group of g prompts sharing s tokens saves
(g-1)*s of them).

Every level is RIGHT-padded and gets explicit ``position_ids`` (the count of real tokens
before each one), so a prompt's tokens keep the positions they have alone, and padding
never sits between two real tokens of a prompt in position space. Pure torch; imports
nothing of urlkit but ``urlkit.model.decoder_calls`` (how a decoder stack is called).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from urlkit.model.decoder_calls import cache_keyword, gathered, states_at


@dataclass
class Level:
    """One decoder pass: right-padded token rows, each continuing a row of the level before."""

    input_ids: torch.Tensor  # (rows, width)
    attention_mask: torch.Tensor  # (rows, width), 1 = real token
    parent: torch.Tensor | None  # (rows,) row of the previous level; None for the first level


PAD, PREFIX, GROUP_PREFIX = -1, -2, -3  # segment ids: padding, a prefix every continuation of the
# row reads, a prefix only the continuations of its ``group`` read
FOLD_WIDTH = 4  # a packed row may grow to this many pack_length where that folds a level
ONE_ROW_WIDTH = 8  # a whole batch goes into one row of up to this many pack_length (a 1+16 step)


@dataclass
class Packs:
    """Level C rows: continuations packed side by side, each row continuing one row of the
    last shared level (``parent``; None when the first level was folded into them).
    ``segment`` numbers the continuations of a row (``PAD`` = padding, ``PREFIX`` = a folded
    shared row that opens it and every continuation attends to, ``GROUP_PREFIX`` = a folded
    group prefix, attended to by the continuations of the same ``group`` only); ``offset`` is
    a token's position after the row's ancestors."""

    input_ids: torch.Tensor  # (rows, width)
    segment: torch.Tensor  # (rows, width)
    offset: torch.Tensor  # (rows, width)
    parent: torch.Tensor | None  # (rows,)
    last: torch.Tensor  # (prompts, 2): (row, column) of each prompt's last token
    prompts: torch.Tensor  # (prompts,): their batch indices
    group: torch.Tensor | None = None  # (rows, width): group of a token, where rows hold several

    @property
    def attention_mask(self) -> torch.Tensor:
        return (self.segment != PAD).long()


@dataclass
class PrefixTree:
    """The shared levels of a batch (A, B) and its packed level C, in length buckets."""

    levels: list[Level]  # a chain: each level continues the rows of the one before
    buckets: list[Packs]  # level C: every bucket continues rows of levels[-1]
    tokens: int  # token slots the levels compute, padding included
    plain_tokens: int  # token slots of the plain batch (n prompts x longest prompt)


def prefix_tree(input_ids: torch.Tensor, attention_mask: torch.Tensor, min_saving: float = 0.1,
                call_cost: int = 64, pack_length: int = 128, fold: bool = True) -> PrefixTree | None:
    """The shared-prefix levels of a (left- or right-) padded batch, or ``None`` when they
    would save less than ``min_saving`` of the plain batch's token slots (one pass is then
    cheaper than several). ``call_cost``: token slots one more decoder call is worth;
    ``pack_length``: the longest row of packed continuations (a longer one gets its own row);
    ``fold``: fold the last shared level into the packed rows where that computes nothing twice
    (each of its rows continued by one packed row of up to ``FOLD_WIDTH * pack_length`` tokens)."""
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
    width = sum(len(row) for level in levels for row in level)
    plain = n * max(map(len, rows))
    if fold and len(levels) - (1 if common else 0) == 2 and width <= ONE_ROW_WIDTH * pack_length:
        # a common prefix, group prefixes and the rest in one wide row (a training step's 1+N
        # prompts whose documents share openings): one decoder pass instead of two to four (a
        # 1+16 step's ~560 tokens: 1.7x faster than a shared level and three length buckets of
        # packs, though its dense attention computes the block-diagonal parts it masks out)
        if width > (1 - min_saving) * plain:
            return None
        row = _one_row(levels[0][0] if common else [], levels[-2], levels[-1], parents[-1], device)
        return PrefixTree([], [row], width, plain)
    packs = _pack(levels[-1], parents[-1], pack_length)
    prefixes: list[list[int]] | None = None
    # rows up to FOLD_WIDTH x pack_length where that folds a level: one decoder pass fewer is
    # worth more than the attention a wider block-diagonal mask wastes (measured, 1+4 and 1+16)
    wide = _pack(levels[-1], parents[-1], FOLD_WIDTH * pack_length) if fold else packs
    if fold and sorted(parent for parent, _ in wide) == list(range(len(levels[-2]))):
        packs, prefixes = wide, levels[-2]  # each row continued by one pack: it opens that pack instead
        packs = [(parent, members, parents[-2][parent] if parents[-2] else None) for parent, members in packs]
        del levels[-2], parents[-2]
    else:
        packs = [(parent, members, parent) for parent, members in packs]
    shared_levels = [_level(level, parent, device) for level, parent in zip(levels[:-1], parents[:-1], strict=True)]
    lengths = [sum(len(levels[-1][m]) for m in members) + (len(prefixes[row]) if prefixes else 0)
               for row, members, _ in packs]
    buckets = [_packs([packs[i] for i in members], levels[-1], prefixes, device)
               for members in _length_buckets(lengths, call_cost)]
    tokens = sum(level.input_ids.numel() for level in shared_levels + buckets)
    if tokens > (1 - min_saving) * plain:
        return None
    return PrefixTree(shared_levels, buckets, tokens, plain)


def run_levels(decoder: torch.nn.Module, tree: PrefixTree) -> torch.Tensor:
    """Final-position hidden states (n_prompts, H) of the prompts of ``tree``, in batch order.

    ``decoder`` is a transformers decoder stack (``LlamaModel``, ``Qwen3Model``, ...) that
    takes a key/value cache (``urlkit.model.decoder_calls.cache_keyword``); the cache of a level
    is gathered to the rows that continue it (differentiable: gradients of shared keys and
    values add up over the prompts reading them).
    """
    cache, mask, seen = None, None, None
    for level in tree.levels:
        cache, mask, seen = _run(decoder, level, cache, mask, seen)
    finals, order = [], []
    for packs in tree.buckets:
        finals.append(_run_packs(decoder, packs, cache, mask, seen))
        order.append(packs.prompts)
    return torch.cat(finals)[torch.cat(order).argsort()]


def _run_packs(decoder, packs: Packs, cache, mask, seen) -> torch.Tensor:
    """One decoder pass of packed continuations: every token attends to its row's ancestors
    (the prefix it continues), to the row's folded prefix and, causally, to its own
    continuation; positions continue the prefix's, so each continuation sees exactly what it
    would see alone."""
    width = packs.input_ids.shape[1]
    segment = packs.segment
    key = segment[:, None, :]
    same = (segment[:, :, None] == key) & (key != PAD)
    if packs.group is not None:  # a group prefix, read by its group's continuations and itself only
        same_group = packs.group[:, :, None] == packs.group[:, None, :]
        same = (same & same_group) | ((key == GROUP_PREFIX) & same_group)
    same |= key == PREFIX
    causal = torch.ones(width, width, dtype=torch.bool, device=segment.device).tril()
    # the diagonal for padding queries too: a query with no key at all gives NaN in softmax
    in_row = (same & causal) | torch.eye(width, dtype=torch.bool, device=segment.device)
    last = packs.last[:, 0] * width + packs.last[:, 1]
    if packs.parent is None:
        return states_at(decoder, last, input_ids=packs.input_ids, attention_mask=in_row[:, None],
                         position_ids=packs.offset, use_cache=False)[1]
    ancestors = mask[packs.parent].bool()[:, None, :].expand(-1, width, -1)
    full = torch.cat([ancestors, in_row], dim=2)[:, None]  # (rows, 1, width, ancestors + width)
    positions = seen[packs.parent][:, None] + packs.offset
    return states_at(decoder, last, input_ids=packs.input_ids, attention_mask=full, position_ids=positions,
                     use_cache=True, **{cache_keyword(decoder): gathered(cache, packs.parent)})[1]


def _run(decoder, level: Level, cache, mask, seen):
    """One decoder pass of ``level`` over the cache of the level before (if any); returns the
    extended (cache, mask, real-token counts). No state of a shared level is read, only its keys
    and values (a fused pass skips its last layer's output half)."""
    if level.parent is None:
        mask = level.attention_mask
        start = torch.zeros(len(mask), dtype=torch.long, device=mask.device)
    else:
        cache = gathered(cache, level.parent)
        mask = torch.cat([mask[level.parent], level.attention_mask], dim=1)
        start = seen[level.parent]
    width = level.input_ids.shape[1]
    positions = start[:, None] + torch.arange(width, device=start.device)[None, :]
    keyword = cache_keyword(decoder)
    out, _ = states_at(decoder, positions.new_zeros(0), input_ids=level.input_ids, attention_mask=mask,
                       position_ids=positions, use_cache=True, **{keyword: cache})
    return getattr(out, keyword), mask, start + level.attention_mask.sum(dim=1)


def _pack(rows: list[list[int]], parents: list[int], pack_length: int) -> list[tuple[int, list[int]]]:
    """(parent, member rows) packs: per parent, rows longest first, each into the first pack
    with room for it (first-fit decreasing)."""
    by_parent: dict[int, list[int]] = {}
    for i, parent in enumerate(parents):
        by_parent.setdefault(parent, []).append(i)
    packs: list[tuple[int, list[int]]] = []
    for parent, members in by_parent.items():
        opened: list[tuple[int, list[int]]] = []
        for i in sorted(members, key=lambda m: -len(rows[m])):
            room = next((pack for pack in opened if pack[0] + len(rows[i]) <= pack_length), None)
            if room is None:
                opened.append((len(rows[i]), [i]))
            else:
                opened[opened.index(room)] = (room[0] + len(rows[i]), [*room[1], i])
        packs += [(parent, members) for _, members in opened]
    return packs


def _packs(packs: list[tuple[int, list[int], int | None]], rows: list[list[int]],
           prefixes: list[list[int]] | None, device) -> Packs:
    """Packed rows of ``(pack key, member rows, parent)``; with ``prefixes``, row ``pack key``
    of the folded level opens the pack."""
    opening = [prefixes[key] if prefixes else [] for key, _, _ in packs]
    width = max(len(prefix) + sum(len(rows[m]) for m in members) for prefix, (_, members, _) in zip(opening, packs, strict=True))
    shape = (len(packs), width)
    input_ids = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, PAD, dtype=torch.long)
    offset = torch.zeros(shape, dtype=torch.long)
    last, prompts = [], []
    for r, (prefix, (_, members, _)) in enumerate(zip(opening, packs, strict=True)):
        column = len(prefix)
        input_ids[r, :column] = torch.tensor(prefix, dtype=torch.long)
        segment[r, :column] = PREFIX
        offset[r, :column] = torch.arange(column)
        for k, m in enumerate(members):
            length = len(rows[m])
            input_ids[r, column : column + length] = torch.tensor(rows[m], dtype=torch.long)
            segment[r, column : column + length] = k
            offset[r, column : column + length] = len(prefix) + torch.arange(length)
            column += length
            last.append((r, column - 1))
            prompts.append(m)
    parents = [parent for _, _, parent in packs]
    parent = None if parents[0] is None else torch.tensor(parents, dtype=torch.long, device=device)
    return Packs(input_ids.to(device), segment.to(device), offset.to(device), parent,
                 torch.tensor(last, dtype=torch.long, device=device), torch.tensor(prompts, dtype=torch.long, device=device))


def _one_row(common: list[int], group_rows: list[list[int]], rests: list[list[int]], parent: list[int],
             device) -> Packs:
    """Every level in one packed row: the common prefix, then per group its prefix and its
    members' continuations; a continuation reads the common prefix, its group's prefix and,
    causally, itself."""
    members: dict[int, list[int]] = {}
    for prompt, group in enumerate(parent):
        members.setdefault(group, []).append(prompt)
    width = len(common) + sum(map(len, group_rows)) + sum(map(len, rests))
    input_ids = torch.zeros((1, width), dtype=torch.long)
    segment = torch.full((1, width), PAD, dtype=torch.long)
    offset = torch.zeros((1, width), dtype=torch.long)
    group_of = torch.full((1, width), -1, dtype=torch.long)
    column = len(common)
    input_ids[0, :column] = torch.tensor(common, dtype=torch.long)
    segment[0, :column] = PREFIX
    offset[0, :column] = torch.arange(column)
    last, prompts = [], []
    for group, prompts_of_group in sorted(members.items()):
        prefix = group_rows[group]
        pieces = [(prefix, GROUP_PREFIX, len(common))] + [
            (rests[m], m, len(common) + len(prefix)) for m in prompts_of_group]
        for tokens, seg, start in pieces:
            span = slice(column, column + len(tokens))
            input_ids[0, span] = torch.tensor(tokens, dtype=torch.long)
            segment[0, span] = seg
            offset[0, span] = start + torch.arange(len(tokens))
            group_of[0, span] = group
            column += len(tokens)
            if seg != GROUP_PREFIX:
                last.append((0, column - 1))
                prompts.append(seg)
    return Packs(input_ids.to(device), segment.to(device), offset.to(device), None,
                 torch.tensor(last, dtype=torch.long, device=device), torch.tensor(prompts, dtype=torch.long, device=device),
                 group_of.to(device))


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
