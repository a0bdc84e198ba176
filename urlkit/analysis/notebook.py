"""What the notebooks share: loading that explains, figures that explain, interactive figures.

A user in JupyterLab picks runs and settings with widgets; an ordinary choice (no run
selected, a setting nobody ran) must print what is missing, not a traceback. :func:`attempt`
runs a figure or table function and turns the library's "nothing to show" errors
(``ValueError``, ``KeyError``, :class:`AnalysisError`) into one printed line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd

from urlkit.analysis.runset import (
    EVAL_COLUMNS,
    HISTORY_COLUMNS,
    PER_QUERY_COLUMNS,
    AnalysisError,
    Runs,
)

EXPLAINED = (ValueError, KeyError, AnalysisError)


def empty_runs(source: str = "") -> Runs:
    config = pd.DataFrame(columns=["run_id", "name", "path", "status", "steps", "experiment_name",
                                   "objective", "loss", "seed"])  # fmt: skip
    return Runs(config, pd.DataFrame(columns=HISTORY_COLUMNS), pd.DataFrame(columns=EVAL_COLUMNS),
                pd.DataFrame(columns=["run_id"]), source,
                pd.DataFrame(columns=PER_QUERY_COLUMNS))  # fmt: skip


def load_or_explain(source: Any) -> Runs:
    """``load_runs(source)``, or an empty Runs after printing why there are none."""
    from urlkit.analysis.runs import load_runs

    try:
        return load_runs(source)
    except AnalysisError as err:
        print(f"no runs to show: {err}\n(train one: python -m urlkit.run; or set runs_source)")
        return empty_runs(str(source))


def run_choices(config: pd.DataFrame) -> dict[str, str]:
    """A run picker's labels -> run ids, one label per run: the run's folder name, with its
    experiment where runs share a name (a study names folders by grid point, so
    figure3_weights/objective=sft,seed=0 and table3_random_direction/objective=sft,seed=0),
    and its run id where that is not enough either."""
    labels = config["name"].astype(str)
    shared = labels.duplicated(keep=False)
    labels = labels.where(~shared, config["experiment_name"].astype(str) + "/" + labels)
    shared = labels.duplicated(keep=False)
    labels = labels.where(~shared, labels + " (" + config["run_id"].astype(str) + ")")
    return dict(zip(labels, config["run_id"], strict=True))


def attempt(make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)``; None after printing the reason when there is nothing to show."""
    try:
        return make(*args, **kwargs)
    except EXPLAINED as err:
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"nothing to show: {reason}")
        return None


HEADLESS = "URLKIT_NOTEBOOK_HEADLESS"
"""Set by :func:`urlkit.notebooks.execute_notebook` for the kernels it starts."""


def interact(**controls: Any) -> Callable:
    """``ipywidgets.interact`` in a live notebook (JupyterLab).

    Executed headlessly (``URLKIT_NOTEBOOK_HEADLESS``, set by ``urlkit.notebooks``) the
    controls are displayed and the callback runs once with their values, its output in the
    cell itself. Why: nbclient's capture of an interact's Output widget is where headless
    executions hung (kernel idle, client waiting for the cell), with ipykernel 7 and 6 alike,
    about 3 times in 10 executions on this project's 2-core machines.
    """
    import ipywidgets as widgets

    if not os.environ.get(HEADLESS):
        return widgets.interact(**controls)

    def run_once(function: Callable) -> Callable:
        from IPython.display import display

        display(widgets.VBox(list(controls.values())))
        function(**{name: control.value for name, control in controls.items()})
        return function

    return run_once


def interactive_figures(interactive: bool) -> str:
    """Zoom, pan and hover readouts on every matplotlib figure (ipympl) when ``interactive``.

    Returns the backend in use. Headless runs (``interactive=False``, or any execution by
    :func:`urlkit.notebooks.execute_notebook`, which sets ``URLKIT_NOTEBOOK_HEADLESS``) keep
    the inline PNGs: there is no browser to zoom in, and ipympl's widget traffic is where a
    headless nbclient execution was seen to hang with the kernel idle.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return "none"
    shell = get_ipython()
    if shell is None:
        return "none"
    if interactive and not os.environ.get(HEADLESS):
        try:
            import ipympl  # noqa: F401
        except ImportError:
            print(
                "static figures: pip install ipympl (bash scripts/install.sh notebooks) for zoom and hover"
            )
        else:
            shell.run_line_magic("matplotlib", "widget")
            return "widget"
    shell.run_line_magic("matplotlib", "inline")
    return "inline"
