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
# Figure 5: the native SFT and CL objectives trained with 1 to 16 negatives per query (on
# manpages, where every query has 16 real negatives); the paper finds that more negatives
# help both and that SFT beats CL at every count. Figure 8 here shows every final metric
# against the count (one panel each). Figure 4: SFT whose score columns grow from {yes, no}
# to the top-k tokens by mean logit; the paper finds that the size changes little. Points:
# mean over seeds; bars: +- one standard deviation. The verdicts give intervals.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
metric = "test/ndcg@10"  # final metric of Figures 4 and 5
negatives_experiments = ["figure5_negatives"]  # the experiments of the runs of Figures 5/8 (Runs.of_experiments)
tokens_experiments = ["figure4_tokens"]  # the experiments of the runs of Figure 4 (its K=2: figure3_weights' run in a study)
all_metrics = ["test/ndcg@5", "test/ndcg@10", "test/recall@5", "test/recall@10", "test/mrr@10"]
figures_dir = "../outputs/figures"  # not ../figures: the committed figures stay as they are
tables_dir = "../outputs/figures/tables"
interactive = (
    True  # widgets and zoomable figures in JupyterLab; headless runs (urlkit.notebooks) set False
)

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import display

from urlkit.analysis import seed_summary, write_table
from urlkit.analysis.figures import metric_by, metric_grid, save_figure
from urlkit.analysis.findings import check_findings, verdict_table
from urlkit.analysis.notebook import attempt, interact, interactive_figures, load_or_explain
from urlkit.analysis.tables import format_table

interactive_figures(interactive)
all_runs = load_or_explain(runs_source)
negatives = all_runs.of_experiments(negatives_experiments).select(objective=["sft", "cl"])
tokens = all_runs.of_experiments(tokens_experiments).select(objective="sft")
print(
    f"{len(all_runs)} runs from {runs_source}: {len(negatives)} for Figures 5/8, {len(tokens)} for Figure 4"
)

# %% [markdown]
# ## Figure 5: negatives per query

# %%
if len(negatives):
    table = seed_summary(negatives, ["objective", "data.n_negatives"], metric)
    write_table(table, tables_dir, "figure5_negatives")
    display(format_table(table))
    fig = attempt(metric_by, negatives, "data.n_negatives", metric, xlabel="negatives per query")
    if fig is not None:
        print("wrote", *save_figure(fig, figures_dir, "figure5_negatives"))
        plt.show()
else:
    print(f"no runs of {negatives_experiments}: python -m urlkit.study figure5")

# %% [markdown]
# ## Figure 8: every final metric against the number of negatives

# %%
if len(negatives):
    fig = attempt(
        metric_grid, negatives, "data.n_negatives", all_metrics, xlabel="negatives per query"
    )
    if fig is not None:
        print("wrote", *save_figure(fig, figures_dir, "figure8_negatives_all_metrics"))
        plt.show()

# %% [markdown]
# ## Figure 4: size of the SFT token set

# %%
if len(tokens):
    table = seed_summary(tokens, ["head.num_tokens"], metric)
    write_table(table, tables_dir, "figure4_tokens")
    display(format_table(table))
    fig = attempt(
        metric_by, tokens, "head.num_tokens", metric, hue=None, xlabel="tokens in the SFT token set"
    )
    if fig is not None:
        print("wrote", *save_figure(fig, figures_dir, "figure4_tokens"))
        plt.show()
else:
    print(f"no runs of {tokens_experiments}: python -m urlkit.study figure4")

# %% [markdown]
# ## Verdicts on the runs selected above (urlkit.analysis.findings)

# %%
selected = all_runs.subset([*negatives.ids, *tokens.ids])
verdicts = verdict_table(check_findings(selected, metric=metric, only=["Figure 4", "Figure 5"]))
display(format_table(verdicts[["finding", "verdict", "effect", "low", "high", "detectable"]]))
for line in verdicts["finding"] + ": " + verdicts["verdict"] + " (" + verdicts["detail"] + ")":
    print(line)

# %% [markdown]
# ## Explore (JupyterLab): any final metric, either setting

# %%
if interactive:
    import ipywidgets as widgets

    final_metrics = all_runs.metric_names or [metric]
    settings = {
        "negatives per query": ("data.n_negatives", negatives, "figure5"),
        "token set size": ("head.num_tokens", tokens, "figure4"),
    }

    @interact(
        setting=widgets.Dropdown(options=list(settings)),
        chosen=widgets.Dropdown(
            options=final_metrics, value=metric if metric in final_metrics else final_metrics[0]
        ),
    )
    def redraw(setting, chosen):
        column, chosen_runs, study = settings[setting]
        if not len(chosen_runs):
            print(f"no runs for '{setting}' in {runs_source}: python -m urlkit.study {study}")
            return
        if attempt(metric_by, chosen_runs, column, chosen, xlabel=setting) is not None:
            plt.show()
