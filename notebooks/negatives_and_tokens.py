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
# # Negatives per query (Figures 5 and 8) and the size of the token set (Figure 4)
#
# Figure 5: the native SFT and CL objectives trained with 1 to 16 negatives per query; the
# paper finds that more negatives help both and that SFT beats CL at every count. Figure 8
# here shows every final metric against the count (one panel each). Figure 4: SFT whose
# score columns grow from {yes, no} to the top-k tokens by mean logit; the paper finds
# that the size changes little. Points: mean over seeds; bars: +- one standard deviation.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
metric = "test/ndcg@10"  # final metric of Figures 4 and 5
negatives_experiments = ["figure5_negatives"]  # experiment_name of the runs of Figures 5/8
tokens_experiments = ["figure4_tokens"]  # experiment_name of the runs of Figure 4
all_metrics = ["test/ndcg@5", "test/ndcg@10", "test/recall@5", "test/recall@10", "test/mrr@10"]
figures_dir = "../figures"
tables_dir = "../figures/tables"
interactive = True  # widgets in JupyterLab; headless runs (urlkit.notebooks) set False

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import display

from urlkit.analysis import load_runs, seed_summary, write_table
from urlkit.analysis.figures import metric_by, metric_grid, save_figure
from urlkit.findings import check_findings

all_runs = load_runs(runs_source)
negatives = all_runs.select(experiment_name=negatives_experiments, objective=["sft", "cl"])
tokens = all_runs.select(experiment_name=tokens_experiments, objective="sft")
print(
    f"{len(all_runs)} runs from {runs_source}: {len(negatives)} for Figures 5/8, {len(tokens)} for Figure 4"
)

# %% [markdown]
# ## Figure 5: negatives per query

# %%
if len(negatives):
    table = seed_summary(negatives, ["objective", "data.n_negatives"], metric)
    write_table(table, tables_dir, "figure5_negatives")
    display(table.round(2))
    fig = metric_by(negatives, "data.n_negatives", metric, xlabel="negatives per query")
    print("wrote", *save_figure(fig, figures_dir, "figure5_negatives"))
    plt.show()
else:
    print(f"no runs of {negatives_experiments}: python -m urlkit.study figure5")

# %% [markdown]
# ## Figure 8: every final metric against the number of negatives

# %%
if len(negatives):
    fig = metric_grid(negatives, "data.n_negatives", all_metrics, xlabel="negatives per query")
    print("wrote", *save_figure(fig, figures_dir, "figure8_negatives_all_metrics"))
    plt.show()

# %% [markdown]
# ## Figure 4: size of the SFT token set

# %%
if len(tokens):
    table = seed_summary(tokens, ["head.num_tokens"], metric)
    write_table(table, tables_dir, "figure4_tokens")
    display(table.round(2))
    fig = metric_by(
        tokens, "head.num_tokens", metric, hue=None, xlabel="tokens in the SFT token set"
    )
    print("wrote", *save_figure(fig, figures_dir, "figure4_tokens"))
    plt.show()
else:
    print(f"no runs of {tokens_experiments}: python -m urlkit.study figure4")

# %% [markdown]
# ## Verdicts (urlkit.findings)

# %%
for verdict in check_findings(all_runs, metric=metric, only=["Figure 4", "Figure 5"]):
    print(verdict)

# %% [markdown]
# ## Explore (JupyterLab): any final metric, either setting

# %%
if interactive:
    import ipywidgets as widgets

    final_metrics = sorted(c for c in all_runs.metrics.columns if c != "run_id")
    settings = {
        "negatives per query": ("data.n_negatives", negatives),
        "token set size": ("head.num_tokens", tokens),
    }

    @widgets.interact(
        setting=widgets.Dropdown(options=list(settings)),
        chosen=widgets.Dropdown(options=final_metrics, value=metric),
    )
    def redraw(setting, chosen):
        column, runs = settings[setting]
        metric_by(runs, column, chosen, xlabel=setting)
        plt.show()
