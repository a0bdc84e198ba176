"""Run directories or W&B -> tidy tables -> probing tables and figures (never training code).

from urlkit.analysis import load_runs, probe_table
runs = load_runs("outputs")                       # or "wandb:<entity>/<project>"
# of_experiments: also the runs a study shared with the experiment (Table 1's diagonal: figure3_weights')
probe_table(runs.of_experiments("table1_weight_direction"), paper="table1_weight_direction")
"""

from urlkit.analysis.paper import PAPER_TABLES, PaperTable, paper_reference
from urlkit.analysis.runs import AnalysisError, Runs, find_run_dirs, load_runs
from urlkit.analysis.tables import probe_table, seed_summary, write_table

__all__ = [
    "PAPER_TABLES",
    "AnalysisError",
    "PaperTable",
    "Runs",
    "find_run_dirs",
    "load_runs",
    "paper_reference",
    "probe_table",
    "seed_summary",
    "write_table",
]
