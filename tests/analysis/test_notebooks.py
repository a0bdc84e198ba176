"""The notebooks execute headlessly on real tiny runs and write their figures and tables."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from helpers.analysis_runs import shared_runs
from PIL import Image

from urlkit.notebooks import NOTEBOOKS_DIR, NotebookError, execute_notebook, notebook_names

# Table 1's runs have 3 negatives and 2 tokens; pooled with figure5's 1-negative runs they
# give each figure two points per curve without more training. interactive=True also runs
# the widget cells (headless, each widget callback runs once with its defaults).
PARAMETERS = {
    "weight_evolution": {
        "experiments": ["table1_weight_direction"],
        "smoothing": 2,
        "interactive": True,
    },
    "probing_tables": {"interactive": True},
    "negatives_and_tokens": {
        "negatives_experiments": ["figure5_negatives", "table1_weight_direction"],
        "tokens_experiments": ["table1_weight_direction"],
        "interactive": True,
    },
}
FIGURES = {
    "weight_evolution": ["figure3_weights", "figure2_native_losses"],
    "probing_tables": ["probing_deltas"],
    "negatives_and_tokens": [
        "figure5_negatives",
        "figure8_negatives_all_metrics",
        "figure4_tokens",
    ],
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    runs = shared_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("figures")
    # each notebook runs in its own kernel process: start them together (a kernel start-up
    # waits more than it computes)
    with ThreadPoolExecutor(len(PARAMETERS)) as pool:
        futures = {
            # a cell that hangs fails the notebook in minutes (the cells here take seconds)
            n: pool.submit(execute_notebook, n, runs, out, parameters=p, timeout_s=180)
            for n, p in PARAMETERS.items()
        }
        return out, {name: future.result() for name, future in futures.items()}


def test_every_notebook_is_covered_and_has_a_parameters_cell():
    import jupytext

    assert set(notebook_names()) == set(PARAMETERS)
    for name in notebook_names():
        notebook = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert (
            len(tagged) == 1
            and "runs_source" in tagged[0].source
            and "interactive" in tagged[0].source
        )


@pytest.mark.parametrize("name", list(FIGURES))
def test_notebook_writes_its_figures_as_png_and_pdf(executed, name):
    out, notebooks = executed
    assert notebooks[name].exists()
    for figure in FIGURES[name]:
        png, pdf = out / f"{figure}.png", out / f"{figure}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000, pdf
        with Image.open(png) as image:
            width, height = image.size
            colors = len(set(image.convert("RGB").resize((200, 100)).getdata()))
        assert width >= 600 and height >= 300, (png, image.size)
        assert colors > 20, f"{png} looks blank ({colors} colours)"


@pytest.mark.parametrize("name", list(FIGURES))
def test_widget_callbacks_ran_without_error(executed, name):
    _, notebooks = executed
    notebook = json.loads(notebooks[name].read_text())
    state = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    outputs = [
        o for w in state.values() if w["model_name"] == "OutputModel" for o in w["state"]["outputs"]
    ]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"]
    kinds = {kind for o in outputs for kind in o.get("data", {})}
    assert ("image/png" in kinds) == (name != "probing_tables")  # redrawn figure / redrawn table


def test_probing_tables_notebook_writes_the_tables_with_real_counts(executed):
    out, _ = executed
    table = pd.read_csv(out / "tables" / "table1_weight_direction.csv")
    native = table[table["weight.name"] == table["direction.name"]]
    assert list(native["n"]) == [2, 2] and native["mean"].between(0, 100).all()
    assert "| weight.name" in (out / "tables" / "table1_weight_direction.md").read_text()
    # tables nobody ran are written too, with n = 0 for every row
    assert set(pd.read_csv(out / "tables" / "table6_tau.csv")["n"]) == {0}


def test_weight_summary_table_holds_both_families_and_both_sides(executed):
    out, _ = executed
    summary = pd.read_csv(out / "tables" / "figure3_weights_summary.csv")
    assert set(summary["side"]) == {"positives", "negatives"} and set(summary["weight"]) == {
        "sft",
        "cl",
    }
    assert set(summary["computed_in"]) == {"its own training", "the other's training"}
    assert summary["all steps"].between(0, 1).all()


def test_unknown_notebook_is_a_clear_error(tmp_path):
    with pytest.raises(NotebookError, match="no notebook 'figure99'.*known: negatives_and_tokens"):
        execute_notebook("figure99", tmp_path, tmp_path)
