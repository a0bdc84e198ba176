# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Probing tables: urlkit beside the paper
#
# Tables 1, 2, 3, 5, 15 and the tau table (Appendix B.2) of Dai et al. (2025). Each table
# comes from the runs of its experiment (`python -m urlkit.run -m experiment=<table>` or
# `python -m urlkit.study <table>`). Columns:
#
# - `n`: runs (seeds) with the final metric; `mean`, `std`: over them, in points (metric x 100)
# - `paper`: the paper's MRB average (percent; Qwen2.5-VL on MRB, so not a target for a small
#   text backbone), shown beside NDCG@10 only: for another metric it is left empty;
#   `difference` = mean - paper
# - `delta`: each row minus the table's first row (Table 3: the weight's native direction,
#   Table 15: the frozen head of the same objective); `paper_delta`: the same in the paper.
#   The deltas are what should agree in sign; the verdicts below say whether they do,
#   with intervals.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
metric = "test/ndcg@10"  # final metric compared with the paper
tables = [
    "table1_weight_direction",
    "table2_weight_properties",
    "table3_random_direction",
    "table5_precision",
    "table6_tau",
    "table15_lm_head",
]
figures_dir = "../outputs/figures"  # not ../figures: the committed figures stay as they are
tables_dir = "../outputs/figures/tables"
interactive = (
    True  # widgets and zoomable figures in JupyterLab; headless runs (urlkit.notebooks) set False
)

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from urlkit.analysis import PAPER_TABLES, probe_table, write_table
from urlkit.analysis.figures import probing_deltas, save_figure
from urlkit.analysis.findings import TABLE_EXPERIMENTS, check_findings, verdict_table
from urlkit.analysis.notebook import attempt, interact, interactive_figures, load_or_explain
from urlkit.analysis.tables import PAPER_METRIC, format_table

interactive_figures(interactive)
runs = load_or_explain(runs_source)
print(f"{len(runs)} runs from {runs_source}")
if len(runs):
    display(
        runs.config.groupby("experiment_name", dropna=False)["run_id"]
        .count()
        .rename("runs")
        .to_frame()
    )
if metric != PAPER_METRIC:
    print(
        f"metric {metric}: the paper reports MRB averages only, so its level is left out; compare the deltas' signs"
    )

# %%
results = {}
for name in tables:
    # Table 1's diagonal runs are figure3_weights' (the same probing setting), as for the findings
    experiments = list(TABLE_EXPERIMENTS.get(name, (name,)))
    table = attempt(probe_table, runs.of_experiments(experiments), metric=metric, paper=name)
    if table is None:
        continue
    results[name] = table
    write_table(table, tables_dir, name)
    display(
        Markdown(
            f"### {PAPER_TABLES[name].title}\n\n"
            + format_table(table).to_markdown(index=False, disable_numparse=True)
        )
    )

# %% [markdown]
# ## Deltas to each table's first row: the paper beside urlkit

# %%
fig = attempt(probing_deltas, results, {name: PAPER_TABLES[name].title for name in results})
if fig is not None:
    print("wrote", *save_figure(fig, figures_dir, "probing_deltas"))
    plt.show()

# %% [markdown]
# ## Verdicts on the tables selected above (urlkit.analysis.findings)
#
# Effect, 95% interval (paired t interval over seeds and test queries), the
# smallest effect these runs could detect, the paper's effect, and the verdict.

# %%
FINDINGS_OF = {"table1_weight_direction": "Table 1", "table2_weight_properties": "Table 2",
               "table3_random_direction": "Table 3", "table5_precision": "Table 5",
               "table6_tau": "Appendix B.2", "table15_lm_head": "Table 15"}  # fmt: skip
chosen = [FINDINGS_OF[t] for t in tables if t in FINDINGS_OF]
verdicts = verdict_table(check_findings(runs, metric=metric, only=chosen)) if chosen else None
if verdicts is not None and len(verdicts):
    display(
        format_table(
            verdicts[["finding", "verdict", "effect", "low", "high", "detectable", "paper"]]
        )
    )
    for line in verdicts["finding"] + ": " + verdicts["verdict"] + " (" + verdicts["detail"] + ")":
        print(line)

# %% [markdown]
# ## Explore (JupyterLab): any table, any final metric

# %%
if interactive:
    import ipywidgets as widgets

    final_metrics = runs.metric_names or [metric]

    @interact(
        table=widgets.Dropdown(options=tables),
        chosen=widgets.Dropdown(
            options=final_metrics, value=metric if metric in final_metrics else final_metrics[0]
        ),
    )
    def show(table, chosen):
        experiments = list(TABLE_EXPERIMENTS.get(table, (table,)))  # Table 1: + figure3_weights' diagonal
        shown = attempt(probe_table, runs.of_experiments(experiments), metric=chosen, paper=table)
        if shown is not None:
            display(format_table(shown))
