"""Data: load a split, find first-stage candidates, draw negatives, render prompts, group."""

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
