"""Training groups: one positive and N negatives per query, padded with a mask.

Item i of :class:`TrainGroups` is the group of query i for the current epoch:

    {"query_id": "q7",
     "doc_ids":  ["d3", "d9", "d1", "", ""],     # positive first, then up to N negatives
     "mask":     tensor([True, True, True, False, False])}   # True = real document

:class:`GroupCollator` renders only the real documents. Their scores come back from the
reranker as a (n_real, K) tensor *in row-major order of the mask* (query 0's documents,
then query 1's, ...), which is exactly the order of ``tensor[mask]``; :func:`scatter_scores`
puts them back into (B, 1+N, K) with zeros at the padded slots, for a loss that takes the
mask. Call :meth:`TrainGroups.set_epoch` before each epoch: negatives and the positive
(when a query has several) are redrawn per (seed, epoch, query id), and so is the item's
``"instruction"`` when the query has several to choose from (M-BEIR's instruction TSV). With DataLoader
workers, set the epoch before the workers start (the default, non-persistent workers do).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from urlkit.data.candidates import Ranking
from urlkit.data.format import DataError, Split
from urlkit.data.negatives import query_rng, sample_negatives
from urlkit.data.prompts import PromptRenderer

PAD_DOC_ID = ""


class TrainGroups(Dataset):
    """(positive, N negatives, mask) groups of a training split.

    A query with several positives gets one per epoch, uniformly among those with grade > 0.
    A query that has some but fewer than N possible negatives is padded (its mask says
    which slots are real); a query with no possible negative at all (e.g. a corpus of one
    document) makes the split unusable for a contrastive group and raises a DataError.
    """

    def __init__(
        self,
        split: Split,
        ranking: Ranking | None,
        n_negatives: int,
        hard_fraction: float = 0.5,
        hard_depth: int = 100,
        seed: int = 0,
        random_from: str = "pool",
    ):
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        self.split = split
        self.ranking = ranking or {}
        self.n_negatives = n_negatives
        self.hard_fraction = hard_fraction
        self.hard_depth = hard_depth
        self.seed = seed
        if random_from not in ("pool", "corpus"):
            raise ValueError(f"random_from must be 'pool' or 'corpus', got {random_from!r}")
        self.random_from = random_from
        self.epoch = 0
        # the documents the dataset's dev and test queries judge are never negatives (a test
        # answer is no training negative); the corpus is filtered once, pools per draw
        self.held_out = split.held_out
        self._corpus_ids = [d for d in split.corpus if d not in self.held_out]
        # a query whose positives the corpus lacks (BEIR's absent judgements) is evaluated only
        self.queries = [q for q in split.queries if q.positives]
        if not self.queries:  # a stream over no group divides by zero in the data loader
            raise DataError(
                f"dataset {split.name}/{split.split} has no query to train on: all its "
                f"{len(split.queries)} queries judge only documents the corpus lacks (a corpus "
                "that does not go with the judgements?)", path=split.source or None,
            )
        self.padded_queries = 0  # queries with fewer than N possible negatives
        for query in self.queries:
            supply = self._negative_supply(query)
            if n_negatives > 0 and supply == 0:
                raise DataError(
                    f"dataset {split.name}/{split.split} is too small for {n_negatives} "
                    f"negatives: query {query.id!r} has no document that is not a positive "
                    "(nor held out: judged by a dev or test query)",
                    path=split.source or None,
                )
            self.padded_queries += supply < n_negatives

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        query = self.queries[index]
        rng = query_rng(self.seed, self.epoch, query.id)
        extra = {}
        if len(query.instruction_choices) > 1:  # its own generator: the negatives stay as they were
            draw = query_rng(self.seed, self.epoch, "instruction\x1f" + query.id)
            extra["instruction"] = query.instruction_choices[int(draw.integers(len(query.instruction_choices)))]
        positives = query.positives
        positive = positives[int(rng.integers(len(positives)))]
        negatives = sample_negatives(
            query, self.ranking.get(query.id), self._corpus_ids, self.n_negatives,
            hard_fraction=self.hard_fraction, hard_depth=self.hard_depth, rng=rng,
            random_from=self.random_from, held_out=self.held_out,
        )
        padding = self.n_negatives - len(negatives)
        mask = torch.zeros(1 + self.n_negatives, dtype=torch.bool)
        mask[: 1 + len(negatives)] = True
        return {"query_id": query.id, "doc_ids": [positive, *negatives] + [PAD_DOC_ID] * padding,
                "mask": mask, **extra}

    def report(self) -> str:
        line = (f"{self.split.name}/{self.split.split}: {len(self)} training groups of 1 "
                f"positive + {self.n_negatives} negatives (hard fraction {self.hard_fraction}, random ones from the {self.random_from})")
        if self.held_out:
            line += f"; {len(self.held_out)} documents judged by dev or test queries are never negatives"
        if self.padded_queries:
            line += f"; {self.padded_queries} queries have fewer negatives and are padded"
        left_out = len(self.split.queries) - len(self.queries)
        if left_out:
            line += (f"; {left_out} {'query judges' if left_out == 1 else 'queries judge'} only "
                     "documents the corpus lacks, left out")
        return line

    def _negative_supply(self, query) -> int:
        """How many distinct documents could serve as the query's negatives."""
        positives = set(query.positives)
        if query.candidates is None or self.random_from == "corpus":  # the whole corpus
            return len(self._corpus_ids) - len(positives.difference(self.held_out))
        ranked = [doc_id for doc_id, _ in self.ranking.get(query.id, [])[: self.hard_depth]]
        return len({*query.candidates, *query.negatives, *ranked} - positives - self.held_out)


class GroupCollator:
    """``collate_fn`` for a DataLoader over :class:`TrainGroups`.

    Returns ``{"prompts": renderer.collate(...) of the real documents (row-major order of
    mask), "mask": (B, 1+N) bool, "query_ids": [B], "doc_ids": [B][1+N]}``. With
    ``chunk_size``, ``"chunks"`` also holds the same documents collated ``chunk_size`` at a
    time (each chunk padded to its own longest prompt), for the constant-memory step.
    ``sources`` (a training mixture, ``urlkit.data.mixture``): the split of each source name;
    an item with ``"source"`` is rendered against that split, and the batch lists the
    items' ``"sources"``.
    """

    def __init__(self, renderer: PromptRenderer, split: Split, chunk_size: int | None = None,
                 sources: dict[str, Split] | None = None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.renderer = renderer
        self.split = split
        self.chunk_size = chunk_size
        self._splits = {None: split, **(sources or {})}
        self._queries = {name: {q.id: q for q in s.queries} for name, s in self._splits.items()}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        encodings = []
        for item in items:
            source = item.get("source")
            split = self._splits[source]
            query = self._queries[source][item["query_id"]]
            instruction = item.get("instruction") or split.instruction_for(query)
            for doc_id, real in zip(item["doc_ids"], item["mask"].tolist(), strict=True):
                if real:
                    encodings.append(self.renderer.encode(instruction, query, split.corpus[doc_id]))
        batch = {
            "prompts": self.renderer.collate(encodings),
            "mask": torch.stack([item["mask"] for item in items]),
            "query_ids": [item["query_id"] for item in items],
            "doc_ids": [item["doc_ids"] for item in items],
        }
        if any("source" in item for item in items):
            batch["sources"] = [item.get("source") for item in items]
        if self.chunk_size is not None:
            size = self.chunk_size
            batch["chunks"] = [
                self.renderer.collate(encodings[i : i + size]) for i in range(0, len(encodings), size)
            ]
        return batch


def collate_groups(items: list[dict[str, Any]], renderer: PromptRenderer, split: Split) -> dict:
    """Functional form of :class:`GroupCollator` (builds the query index on every call:
    prefer ``GroupCollator(renderer, split)`` as a DataLoader's ``collate_fn``)."""
    return GroupCollator(renderer, split)(items)


def scatter_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n_real, K) scores in row-major mask order -> (B, 1+N, K), zeros at padded slots.

    Differentiable in ``scores`` (it is an index_put into a fresh zero tensor).
    """
    if scores.shape[0] != int(mask.sum()):
        raise ValueError(f"{scores.shape[0]} score rows for {int(mask.sum())} real documents")
    grouped = scores.new_zeros((*mask.shape, scores.shape[-1]))
    grouped[mask.to(scores.device)] = scores
    return grouped
