"""Execute the analysis notebooks headlessly: ``python -m urlkit.notebooks run <name> --runs <dir>``.

The notebooks live in ``notebooks/`` as jupytext percent files (``*.py``, reviewable in git);
each has a cell tagged ``parameters`` (the source of runs, the output folders, the choices).
Here jupytext turns one into an ``.ipynb`` and papermill executes it with new parameters,
``interactive=False`` (no widgets), writing the executed notebook beside its figures::

    python -m urlkit.notebooks run weight_evolution --runs outputs/studies/laptop --out figures
    python -m urlkit.notebooks list
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from urlkit.paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


class NotebookError(RuntimeError):
    """A notebook that is missing or failed to execute (names the notebook and the cell)."""


def notebook_names() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.py"))


def execute_notebook(
    name: str,
    runs: str | Path,
    out: str | Path = "figures",
    tables: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    kernel: str = "python3",
    executed: str | Path | None = None,
    timeout_s: int = 1800,
) -> Path:
    """Run ``notebooks/<name>.py`` on ``runs``; figures go to ``out``, tables to ``tables``
    (default ``<out>/tables``). Returns the executed notebook (``executed``, default
    ``<out>/notebooks/<name>.ipynb``). A cell running past ``timeout_s`` fails the notebook
    instead of hanging a study or a test run."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = NOTEBOOKS_DIR / f"{name}.py"
    if not source.exists():
        raise NotebookError(
            f"no notebook {name!r} in {NOTEBOOKS_DIR} (known: {', '.join(notebook_names())})"
        )
    out = Path(out).resolve()
    executed = Path(executed) if executed else out / "notebooks" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "runs_source": str(runs) if str(runs).startswith("wandb") else str(Path(runs).resolve()),
        "figures_dir": str(out),
        "tables_dir": str(Path(tables).resolve() if tables else out / "tables"),
        "interactive": False,
        **(parameters or {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        unexecuted = Path(tmp) / f"{name}.ipynb"
        jupytext.write(jupytext.read(source), unexecuted)
        try:
            papermill.execute_notebook(
                str(unexecuted), str(executed), parameters=values, kernel_name=kernel,
                cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False,
                execution_timeout=timeout_s, start_timeout=120,
            )  # fmt: skip
        except TimeoutError as err:
            raise NotebookError(
                f"notebook {source}: a cell ran past {timeout_s} s ({err})"
            ) from err
        except PapermillExecutionError as err:
            raise NotebookError(
                f"notebook {source} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                f"(the executed notebook with the traceback: {executed})"
            ) from err
    return executed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m urlkit.notebooks", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the notebooks in notebooks/")
    run = commands.add_parser("run", help="execute a notebook headlessly")
    run.add_argument("name", help="a notebook of notebooks/ without .py, or 'all'")
    run.add_argument(
        "--runs", required=True, help="a folder of run directories, or wandb:<entity>/<project>"
    )
    run.add_argument(
        "--out", default="figures", help="folder of the figures (default: %(default)s)"
    )
    run.add_argument("--tables", default=None, help="folder of the tables (default: <out>/tables)")
    run.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
        help="another notebook parameter (VALUE read as YAML: 5, true, [a, b])",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(notebook_names()))
        return 0
    import yaml

    parameters = {}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item!r}: expected KEY=VALUE")
        parameters[key] = yaml.safe_load(value)
    names = notebook_names() if args.name == "all" else [args.name]
    for name in names:
        try:
            executed = execute_notebook(name, args.runs, args.out, args.tables, parameters)
        except NotebookError as err:
            parser.exit(1, f"error: {err}\n")
        print(f"[urlkit] {name}: executed {executed}; figures in {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
