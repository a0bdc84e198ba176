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
# # Weights over training (Figure 3) and URL against the native losses (Figure 2)
#
# URL writes the gradient of both native objectives as a detached per-document weight times
# a direction. For a query with positive $d^+$ and negatives $d^-_i$:
#
# - SFT weight: $W^+ = 1 - p_{yes}(d^+)$, $W^-_i = 1 - p_{no}(d^-_i)$ ($= p_{yes}(d^-_i)$ for the two tokens yes, no)
# - CL weight: $c = \mathrm{softmax}$ over the $1+N$ yes-logits, $W^+ = 1 - c_0$, $W^-_i = c_i$
#
# Every training step logs the mean weights that trained (`w_pos_mean`, `w_neg_mean`) and,
# from the same scores, the weights each other family *would* have given (`w_sft_pos`,
# `w_cl_pos`, ...). The paper (Figure 3) finds the CL weights clearly below the SFT weights
# during training, for positives and for negatives. Solid lines: the weight that trained
# its run; dashed: the same family computed along the other objective's training.
#
# Defaults work on the output of a plain `python -m urlkit.run` (one URL(sft, sft) run);
# `python -m urlkit.study figure3` trains both objectives, the native losses and 3 seeds.
# The explorer at the end plots any logged per-step column.

# %% tags=["parameters"]
runs_source = "../outputs"  # a folder of run directories, or "wandb:<entity>/<project>"
experiments = None  # the experiments of the runs to use (Runs.of_experiments), e.g. ["figure3_weights", "figure2_native"]; None: every run
families = ["sft", "cl"]  # weight families compared
smoothing = 10  # moving average over this many optimizer steps (per run)
counterfactual = True  # also draw each family's weight computed along the other's training
figures_dir = "../outputs/figures"  # not ../figures: the committed figures stay as they are
tables_dir = "../outputs/figures/tables"
interactive = (
    True  # widgets and zoomable figures in JupyterLab; headless runs (urlkit.notebooks) set False
)

# %%
# ruff: noqa: E402  (imports follow the parameters cell, which papermill must find first)
import matplotlib.pyplot as plt
from IPython.display import display

from urlkit.analysis import write_table
from urlkit.analysis.figures import (
    native_losses,
    save_figure,
    step_curves,
    weight_evolution,
    weight_summary,
)
from urlkit.analysis.findings import check_findings, verdict_table
from urlkit.analysis.notebook import (
    attempt,
    interact,
    interactive_figures,
    load_or_explain,
    run_choices,
)
from urlkit.analysis.tables import format_table

interactive_figures(interactive)
all_runs = load_or_explain(runs_source)
runs = all_runs.of_experiments(experiments) if experiments else all_runs
print(f"{len(runs)} of {len(all_runs)} runs from {runs_source}")
if len(runs):
    display(
        runs.config[
            [
                c
                for c in ("name", "experiment_name", "objective", "seed", "steps", "status")
                if c in runs.config
            ]
        ]
    )

# %% [markdown]
# ## Figure 3: average $W^+$ and $W^-$ over training steps

# %%
fig = attempt(
    weight_evolution, runs, smoothing=smoothing, families=families, counterfactual=counterfactual
)
if fig is not None:
    print("wrote", *save_figure(fig, figures_dir, "figure3_weights"))
    plt.show()

# %% [markdown]
# Mean weights over the whole of training and over its last quarter, per weight family and
# the training it was computed along (the numbers behind the figure).

# %%
summary = weight_summary(runs, families, counterfactual)
write_table(summary, tables_dir, "figure3_weights_summary", digits=4)
display(format_table(summary, 4))

# %% [markdown]
# ## Figure 2: URL against the native losses
#
# URL's own value is a surrogate (its gradient, not its value, equals the native one), so the
# curves are the native SFT loss along URL(sft, sft) and along training with the native SFT
# loss itself (`+objective=native_sft`), and the same for InfoNCE. The paper finds them
# statistically indistinguishable; the verdict below tests equivalence of the test metric.

# %%
fig = attempt(native_losses, runs, smoothing=smoothing)
if fig is not None:
    print("wrote", *save_figure(fig, figures_dir, "figure2_native_losses"))
    plt.show()

# %% [markdown]
# ## Verdicts on the runs selected above (urlkit.analysis.findings)
#
# Effect, 95% interval (paired t interval over seeds, and queries for test metrics), the
# smallest effect these runs could detect, and the verdict: holds / fails / inconclusive /
# not run.

# %%
verdicts = verdict_table(check_findings(runs, only=["Figure 2", "Figure 3"]))
display(
    format_table(
        verdicts[["finding", "verdict", "effect", "low", "high", "detectable", "paper"]], 3
    )
)
for line in verdicts["finding"] + ": " + verdicts["verdict"] + " (" + verdicts["detail"] + ")":
    print(line)

# %% [markdown]
# ## Explore (JupyterLab): any logged per-step column, per run and mean +- 95% interval over seeds

# %%
if interactive and len(all_runs):
    import ipywidgets as widgets

    names = run_choices(all_runs.config)  # label -> run id, one per run
    chosen = [label for label, run_id in names.items() if run_id in set(runs.ids)]
    columns = sorted(all_runs.history["metric"].unique())
    groupings = [
        c
        for c in ("objective", "weight.name", "direction.name", "loss", "experiment_name", "seed")
        if c in all_runs.config
    ]

    @interact(
        picked=widgets.SelectMultiple(
            options=list(names), value=chosen, description="runs"
        ),
        column=widgets.Dropdown(
            options=columns,
            value="w_pos_mean" if "w_pos_mean" in columns else columns[0],
            description="column",
        ),
        by=widgets.Dropdown(options=groupings, description="group by"),
        smoothing=widgets.IntSlider(value=smoothing, min=1, max=200, description="smoothing"),
        per_run=widgets.Checkbox(value=True, description="each run"),
    )
    def explore(picked, column, by, smoothing, per_run):
        if not picked:
            print("select at least one run (ctrl/shift-click in the list)")
            return
        if (
            attempt(
                step_curves,
                all_runs.subset(names[p] for p in picked),
                column,
                by,
                smoothing,
                per_run,
            )
            is not None
        ):
            plt.show()

# %% [markdown]
# ## Explore (JupyterLab): the weights of Figure 3 for any runs and families

# %%
if interactive and len(all_runs):

    @interact(
        picked=widgets.SelectMultiple(
            options=list(names), value=chosen, description="runs"
        ),
        smoothing=widgets.IntSlider(value=smoothing, min=1, max=200, description="smoothing"),
        families=widgets.SelectMultiple(
            options=["sft", "cl", "base"], value=list(families), description="families"
        ),
        counterfactual=widgets.Checkbox(value=counterfactual, description="counterfactual"),
    )
    def redraw(picked, smoothing, families, counterfactual):
        if not picked or not families:
            print("select at least one run and one family")
            return
        if (
            attempt(
                weight_evolution,
                all_runs.subset(names[p] for p in picked),
                smoothing,
                families,
                counterfactual,
            )
            is not None
        ):
            plt.show()
