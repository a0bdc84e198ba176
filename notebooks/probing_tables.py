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
#   text backbone); `difference` = mean - paper
# - `delta`: each row minus the table's first row (Table 3: the weight's native direction,
#   Table 15: the frozen head of the same objective); `paper_delta`: the same in the paper.
#   The deltas are what should agree in sign.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
metric = "test/ndcg@10"  # final metric compared with the paper's MRB average
tables = [
    "table1_weight_direction",
    "table2_weight_properties",
    "table3_random_direction",
    "table5_precision",
    "table6_tau",
    "table15_lm_head",
]
figures_dir = "../figures"
tables_dir = "../figures/tables"
interactive = True  # widgets in JupyterLab; headless runs (urlkit.notebooks) set False

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from urlkit.analysis import PAPER_TABLES, load_runs, probe_table, write_table
from urlkit.analysis.figures import probing_deltas, save_figure
from urlkit.findings import check_findings

runs = load_runs(runs_source)
print(f"{len(runs)} runs from {runs_source}")
display(
    runs.config.groupby("experiment_name", dropna=False)["run_id"].count().rename("runs").to_frame()
)

# %%
results = {}
for name in tables:
    table = probe_table(runs.select(experiment_name=name), metric=metric, paper=name)
    results[name] = table
    write_table(table, tables_dir, name)
    display(
        Markdown(f"### {PAPER_TABLES[name].title}\n\n" + table.round(2).to_markdown(index=False))
    )

# %% [markdown]
# ## Deltas to each table's first row: the paper beside urlkit

# %%
fig = probing_deltas(results, {name: PAPER_TABLES[name].title for name in results})
print("wrote", *save_figure(fig, figures_dir, "probing_deltas"))
plt.show()

# %% [markdown]
# ## Verdicts (urlkit.findings)

# %%
for verdict in check_findings(runs, metric=metric):
    if verdict.finding.startswith(("Table", "Appendix")):
        print(verdict)

# %% [markdown]
# ## Explore (JupyterLab): any table, any final metric

# %%
if interactive:
    import ipywidgets as widgets

    final_metrics = sorted(c for c in runs.metrics.columns if c != "run_id")

    @widgets.interact(
        table=widgets.Dropdown(options=tables),
        chosen=widgets.Dropdown(options=final_metrics, value=metric),
    )
    def show(table, chosen):
        display(
            probe_table(runs.select(experiment_name=table), metric=chosen, paper=table).round(2)
        )
