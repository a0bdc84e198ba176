"""The notebooks execute headlessly on real tiny runs and write their figures and tables, and
run with their default parameters (as a user opens them) on a plain ``python -m urlkit.run``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from helpers.analysis_runs import FAST_EVAL, shared_runs
from helpers.run_helpers import compose_train, write_small_dataset
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
    """Headless, every interact cell shows its controls and runs its callback once with their
    values (urlkit.analysis.notebook.interact), the callback's output in the cell."""
    _, notebooks = executed
    notebook = json.loads(notebooks[name].read_text())
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code" and "@interact(" in "".join(c["source"])]
    assert cells, f"{name} has no interact cell"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"]
    kinds = {kind for o in outputs for kind in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the controls
    # a redrawn figure (inline PNG headless), a table is HTML or text
    assert ("image/png" in kinds) == (name != "probing_tables"), kinds


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


def test_a_headless_run_on_a_folder_without_runs_fails_naming_it(tmp_path, capsys):
    from urlkit.notebooks import main

    # it used to execute, print "no runs to show" in a cell and report success, writing nothing
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotebookError, match=r"no run directories under .*empty"):
        execute_notebook("probing_tables", tmp_path / "empty", tmp_path / "figures")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "weight_evolution", "--runs", str(tmp_path / "typo"), "--out", str(tmp_path)])
    assert exit_.value.code == 1 and "typo: no such folder of runs" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


def test_the_run_picker_lists_every_run_when_folder_names_repeat(tmp_path):
    # a study names run folders by grid point: figure3_weights/sft,seed=0 and
    # table3_random_direction/sft,seed=0; the picker keyed runs by folder name, so it listed
    # and drew one of the two
    from helpers.synthetic_runs import write_arms

    arms = {("figure3_weights", "sft"): {"objective": "sft"}, ("figure3_weights", "cl"): {"objective": "cl"},
            ("table3_random_direction", "sft"): {"objective": "sft"}}  # fmt: skip
    root = write_arms(tmp_path / "runs", arms, {}, seeds=2, queries=4, steps=3)
    path = execute_notebook("weight_evolution", root, tmp_path / "figures",
                            parameters={"interactive": True, "smoothing": 1}, timeout_s=180)  # fmt: skip
    state = json.loads(path.read_text())["metadata"]["widgets"]
    state = state["application/vnd.jupyter.widget-state+json"]["state"]
    pickers = [w["state"] for w in state.values() if w["model_name"] == "SelectMultipleModel"]
    runs = [p for p in pickers if p.get("description") == "runs"]
    assert runs and all(len(p["_options_labels"]) == 6 and len(p["index"]) == 6 for p in runs)
    assert "table3_random_direction/sft,seed=0" in runs[0]["_options_labels"]


# -- as a user meets them: default parameters, the output of a plain `python -m urlkit.run` ----


@pytest.fixture(scope="module")
def plain_run_notebooks(tmp_path_factory):
    """One run of the defaults (tiny model), then every notebook with ITS defaults, widgets on."""
    from urlkit.run import train

    root = tmp_path_factory.mktemp("plain")
    data = write_small_dataset(root / "data")
    train(compose_train(data, *FAST_EVAL), root / "outputs" / "runs" / "plain")
    out = root / "figures"
    executed = {}
    for name in PARAMETERS:  # one after the other: kernels started together compete for the CPU
        path = execute_notebook(name, root / "outputs", out, parameters={"interactive": True})
        executed[name] = json.loads(path.read_text())
    return out, executed


def _text(notebook) -> str:
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_defaults_run_on_a_plain_run_with_messages_not_tracebacks(plain_run_notebooks, name):
    out, notebooks = plain_run_notebooks
    notebook = notebooks[name]
    errors = [
        o for c in notebook["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert not errors
    text = _text(notebook)
    assert "Traceback" not in text
    if name == "weight_evolution":
        # the one URL(sft, sft) run: its weights are drawn, the explorer appears, and the
        # claims that need CL runs say what is missing
        assert (out / "figure3_weights.png").exists() and "1 of 1 runs" in text
        assert "Figure 3 (W+): not run" in text and "objective=cl" in text
        state = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"][
            "state"
        ]
        assert any(w["model_name"] == "SelectMultipleModel" for w in state.values())
    if name == "negatives_and_tokens":
        assert "python -m urlkit.study figure5" in text


def test_notebooks_start_with_their_title_and_have_no_empty_cell():
    import jupytext

    for name in notebook_names():
        cells = jupytext.read(NOTEBOOKS_DIR / f"{name}.py").cells
        assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
        assert all(cell.source.strip() for cell in cells), name


def test_default_figures_dir_is_not_the_committed_figures():
    import jupytext

    for name in notebook_names():
        (parameters,) = [c for c in jupytext.read(NOTEBOOKS_DIR / f"{name}.py").cells
                         if "parameters" in c.metadata.get("tags", [])]  # fmt: skip
        assert 'figures_dir = "../outputs/figures"' in parameters.source


def test_widget_choices_that_show_nothing_print_why(capsys):
    import pandas as pd

    from urlkit.analysis.figures import step_curves, weight_evolution
    from urlkit.analysis.notebook import attempt, empty_runs
    from urlkit.analysis.tables import format_table

    assert attempt(weight_evolution, empty_runs()) is None
    assert attempt(step_curves, empty_runs(), "w_pos_mean") is None
    out = capsys.readouterr().out
    assert "nothing to show: no run selected" in out and "no run selected logs 'w_pos_mean'" in out
    taus = format_table(
        pd.DataFrame({"weight.tau": [1e-2, 1e-3, 1e-4], "mean": [55.071, 56.5, 55.9]})
    )
    assert (
        list(taus["weight.tau"]) == ["0.01", "0.001", "0.0001"] and list(taus["mean"])[0] == "55.07"
    )


def test_other_metric_leaves_the_papers_level_out(tmp_path_factory):
    from urlkit.analysis import load_runs, probe_table

    runs = load_runs(shared_runs(tmp_path_factory)).select(
        experiment_name="table1_weight_direction"
    )
    ndcg = probe_table(runs, metric="test/ndcg@10", paper="table1_weight_direction")
    mrr = probe_table(runs, metric="test/mrr@10", paper="table1_weight_direction")
    assert ndcg["paper"].notna().all() and mrr["paper"].isna().all()
    assert list(mrr["paper_delta"]) == list(ndcg["paper_delta"])  # the signs to compare stay
