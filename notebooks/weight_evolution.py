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
# # Weights over training (Figure 3) and the native losses (Figure 2)
#
# URL writes the gradient of both native objectives as a detached per-document weight times
# a direction. For a query with positive $d^+$ and negatives $d^-_i$:
#
# - SFT weight: $W^+ = 1 - p_{yes}(d^+)$, $W^-_i = p_{yes}(d^-_i)$
# - CL weight: $c = \mathrm{softmax}$ over the $1+N$ yes-logits, $W^+ = 1 - c_0$, $W^-_i = c_i$
#
# Every training step logs the mean weights that trained (`w_pos_mean`, `w_neg_mean`) and,
# from the same scores, the weights each other family *would* have given (`w_sft_pos`,
# `w_cl_pos`, ...). The paper (Figure 3) finds the CL weights clearly below the SFT weights
# during training, for positives and for negatives. Solid lines: the weight that trained
# its run; dashed: the same family computed along the other objective's training.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
experiments = ["figure3_weights"]  # experiment_name of the runs to plot; None: every run
families = ["sft", "cl"]  # weight families compared
smoothing = 10  # moving average over this many optimizer steps (per run)
counterfactual = True  # also draw each family's weight computed along the other's training
figures_dir = "../figures"
tables_dir = "../figures/tables"
interactive = True  # widgets in JupyterLab; headless runs (urlkit.notebooks) set False

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import display

from urlkit.analysis import load_runs, write_table
from urlkit.analysis.figures import native_losses, save_figure, weight_evolution, weight_summary
from urlkit.findings import check_findings

all_runs = load_runs(runs_source)
runs = all_runs.select(experiment_name=experiments) if experiments else all_runs
print(f"{len(runs)} of {len(all_runs)} runs from {runs_source}")
display(runs.config[["run_id", "experiment_name", "objective", "seed", "steps", "status"]])

# %% [markdown]
# ## Figure 3: average $W^+$ and $W^-$ over training steps

# %%
fig = weight_evolution(runs, smoothing=smoothing, families=families, counterfactual=counterfactual)
print("wrote", *save_figure(fig, figures_dir, "figure3_weights"))
plt.show()

# %% [markdown]
# Mean weights over the whole of training and over its last quarter, per weight family and
# the training it was computed along (the numbers behind the figure).

# %%
summary = weight_summary(runs, families, counterfactual)
write_table(summary, tables_dir, "figure3_weights_summary", digits=4)
display(summary.round(4))

# %% [markdown]
# ## Figure 2: the native losses along URL training
#
# URL's own value is a surrogate (its gradient, not its value, equals the native one), so the
# curves are the native SFT loss along URL(sft, sft) and the native InfoNCE loss along
# URL(cl, cl), both logged at every step.

# %%
fig = native_losses(runs, smoothing=smoothing)
print("wrote", *save_figure(fig, figures_dir, "figure2_native_losses"))
plt.show()

# %% [markdown]
# ## Verdicts (urlkit.findings, on every loaded run)

# %%
for verdict in check_findings(all_runs, only=["Figure 2", "Figure 3"]):
    print(verdict)

# %% [markdown]
# ## Explore (JupyterLab): pick runs, smoothing, families

# %%
if interactive:
    import ipywidgets as widgets

    names = dict(zip(all_runs.config["name"], all_runs.config["run_id"], strict=True))

    @widgets.interact(
        picked=widgets.SelectMultiple(
            options=list(names), value=list(runs.config["name"]), description="runs"
        ),
        smoothing=widgets.IntSlider(value=smoothing, min=1, max=200, description="smoothing"),
        families=widgets.SelectMultiple(
            options=["sft", "cl", "base"], value=list(families), description="families"
        ),
        counterfactual=widgets.Checkbox(value=counterfactual, description="counterfactual"),
    )
    def redraw(picked, smoothing, families, counterfactual):
        weight_evolution(
            all_runs.subset(names[p] for p in picked), smoothing, families, counterfactual
        )
        plt.show()
