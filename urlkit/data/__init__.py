"""Data: load a split, find first-stage candidates, draw negatives, render prompts, group.

Names are imported on first use (PEP 562), so loading data or building BM25 candidates does
not pay for importing torch; ``from urlkit.data import X`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "format": ["DataError", "Document", "Query", "Split"],
    "loaders": ["load_split"],
    "candidates": ["Ranking", "bm25_candidates", "first_stage", "read_trec_run",
                   "write_trec_run"],
    "negatives": ["query_rng", "sample_negatives"],
    "prompts": ["DEFAULT_SYSTEM_PROMPT", "DEFAULT_TEMPLATE", "Encoded", "PromptRenderer"],
    "groups": ["GroupCollator", "TrainGroups", "collate_groups", "scatter_scores"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_TEMPLATE",
    "DataError",
    "Document",
    "Encoded",
    "GroupCollator",
    "PromptRenderer",
    "Query",
    "Ranking",
    "Split",
    "TrainGroups",
    "bm25_candidates",
    "collate_groups",
    "first_stage",
    "load_split",
    "query_rng",
    "read_trec_run",
    "sample_negatives",
    "scatter_scores",
    "write_trec_run",
]

if TYPE_CHECKING:
    from urlkit.data.candidates import (
        Ranking,
        bm25_candidates,
        first_stage,
        read_trec_run,
        write_trec_run,
    )
    from urlkit.data.format import DataError, Document, Query, Split
    from urlkit.data.groups import GroupCollator, TrainGroups, collate_groups, scatter_scores
    from urlkit.data.loaders import load_split
    from urlkit.data.negatives import query_rng, sample_negatives
    from urlkit.data.prompts import DEFAULT_SYSTEM_PROMPT, DEFAULT_TEMPLATE, Encoded, PromptRenderer


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'urlkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"urlkit.data.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
