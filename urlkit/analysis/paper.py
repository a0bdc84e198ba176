"""The paper's probing tables, translated to the config columns of urlkit runs.

Dai et al. (2025), arXiv 2510.14824, Tables 1, 2, 3, 5, 15 and the tau table of Appendix B.2,
transcribed in ``urlkit/paper/*.csv`` (MRB averages, in percent; a copy of the project's
reference numbers so that an installed urlkit has them). Each :class:`PaperTable` says how a
row of the paper names a run: which run column each paper column is, and how its values are
spelled there (the paper's "fp16" is ``weight.dtype = float16``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


@dataclass(frozen=True)
class PaperTable:
    name: str  # the CSV stem, which is also the experiment name (conf/experiment/<name>.yaml)
    title: str
    columns: dict[str, str]  # paper column -> run config column
    values: dict[str, dict] = field(
        default_factory=dict
    )  # paper column -> {paper value: run value}
    within: tuple[
        str, ...
    ] = ()  # run columns: a row's delta is to the first paper row of its group
    score: str = "mrb_avg"

    @property
    def keys(self) -> list[str]:
        """The run columns a row is identified by."""
        return list(self.columns.values())


PAPER_TABLES = {
    t.name: t
    for t in [
        PaperTable(
            "table1_weight_direction",
            "Table 1: weight x direction",
            {"weight": "weight.name", "direction": "direction.name"},
        ),
        PaperTable(
            "table2_weight_properties",
            "Table 2: properties of the weight (sft direction)",
            {"method": "weight.name", "direction": "direction.name"},
            values={"method": {"base+tau_mask": "tau_mask"}},
        ),
        PaperTable(
            "table3_random_direction",
            "Table 3: learnable random direction vs native",
            {"weight": "weight.name", "direction": "direction.name"},
            within=("weight.name",),
        ),
        PaperTable(
            "table5_precision",
            "Table 5: precision of the CL weight",
            {"objective": "objective", "weight_precision": "weight.dtype"},
            values={"weight_precision": {"fp16": "float16", "fp32": "float32"}},
        ),
        PaperTable(
            "table6_tau",
            "Appendix B.2: tau of the tau mask",
            {"method": "weight.name", "tau": "weight.tau"},
        ),
        PaperTable(
            "table15_lm_head",
            "Table 15: LM head frozen vs trainable",
            {"objective": "objective", "lm_head": "head.trainable"},
            values={"lm_head": {"frozen": False, "trainable": True}},
            within=("objective",),
        ),
    ]
}


def paper_reference(name: str) -> pd.DataFrame:
    """The paper's rows of one table: the run key columns, then ``paper`` (MRB, percent)."""
    if name not in PAPER_TABLES:
        raise KeyError(f"no paper table {name!r}; known: {', '.join(PAPER_TABLES)}")
    spec = PAPER_TABLES[name]
    raw = pd.read_csv(PAPER_DIR / f"{name}.csv")
    table = pd.DataFrame(
        {
            run_column: raw[paper_column].map(
                lambda v, c=paper_column: spec.values.get(c, {}).get(v, v)
            )
            for paper_column, run_column in spec.columns.items()
        }
    )
    table["paper"] = raw[spec.score].astype(float)
    return table
