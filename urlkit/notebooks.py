"""Execute the analysis notebooks headlessly: ``python -m urlkit.notebooks run <name> --runs <dir>``.

The notebooks live in ``notebooks/`` as jupytext percent files (``*.py``, reviewable in git);
each has a cell tagged ``parameters`` (the source of runs, the output folders, the choices).
Here jupytext turns one into an ``.ipynb`` and papermill executes it with new parameters,
``interactive=False`` (no widgets), writing the executed notebook beside its figures::

    python -m urlkit.notebooks run weight_evolution --runs outputs/studies/laptop --out outputs/figures
    python -m urlkit.notebooks list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from urlkit.paths import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_STARTS = 2  # a kernel that dies before its first reply is started once more


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
    instead of hanging a study or a test run.

    papermill runs in a child process of its own, never in the caller's: nbclient drives the
    kernel from an asyncio loop and ZeroMQ sockets that belong to the process, and several
    executions from threads of one long-lived process (a test session that had already run
    other tests) deadlocked with every kernel idle. A child per notebook has nothing shared
    to deadlock on, so callers may run several at once.
    """
    source = NOTEBOOKS_DIR / f"{name}.py"
    if not source.exists():
        raise NotebookError(
            f"no notebook {name!r} in {NOTEBOOKS_DIR} (known: {', '.join(notebook_names())})"
        )
    if not str(runs).startswith("wandb"):
        _require_runs(Path(runs))
    out = Path(out).resolve()
    executed = (Path(executed) if executed else out / "notebooks" / f"{name}.ipynb").resolve()
    values = {
        "runs_source": str(runs) if str(runs).startswith("wandb") else str(Path(runs).resolve()),
        "figures_dir": str(out),
        "tables_dir": str(Path(tables).resolve() if tables else out / "tables"),
        "interactive": False,
        **(parameters or {}),
    }
    request = {"name": name, "executed": str(executed), "parameters": values,
               "kernel": kernel, "timeout_s": timeout_s}  # fmt: skip
    # the child imports this very urlkit, wherever the caller imported it from
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    try:
        child = subprocess.run(
            [sys.executable, "-m", "urlkit.notebooks", "_execute"], input=json.dumps(request),
            capture_output=True, text=True, env=env, timeout=timeout_s + 300,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise NotebookError(f"notebook {source}: no answer after {err.timeout:.0f} s") from err
    if child.returncode != 0:
        lines = [line for line in child.stderr.splitlines() if line.strip()]
        message = lines[-1].removeprefix("error: ") if lines else f"exit code {child.returncode}"
        raise NotebookError(message)
    return executed


def _require_runs(folder: Path) -> None:
    """A NotebookError naming ``folder`` when it holds no run directory: a notebook run on it
    (a mistyped --runs) would print "no runs to show" in its cells and still report success,
    with no figure or table written."""
    from urlkit.analysis.local_source import find_run_dirs
    from urlkit.analysis.runset import AnalysisError

    try:
        found = find_run_dirs(folder)
    except AnalysisError as err:
        raise NotebookError(str(err)) from err
    if not found:
        raise NotebookError(
            f"no run directories under {folder} (a run directory holds config.yaml and "
            "history.csv; train one with python -m urlkit.run)"
        )


def _execute_here(name: str, executed: str, parameters: Mapping[str, Any], kernel: str,
                  timeout_s: int) -> None:  # fmt: skip
    """jupytext -> .ipynb -> papermill, in this process (the child of :func:`execute_notebook`)."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = NOTEBOOKS_DIR / f"{name}.py"
    Path(executed).parent.mkdir(parents=True, exist_ok=True)
    from urlkit.analysis.notebook import HEADLESS

    os.environ[HEADLESS] = "1"  # the kernel inherits it: inline figures, interact runs once
    with tempfile.TemporaryDirectory() as tmp:
        unexecuted = Path(tmp) / f"{name}.ipynb"
        jupytext.write(jupytext.read(source), unexecuted)
        try:
            for attempt in range(KERNEL_STARTS):
                try:
                    papermill.execute_notebook(
                        str(unexecuted), executed, parameters=dict(parameters), kernel_name=kernel,
                        cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False,
                        execution_timeout=timeout_s, start_timeout=120,
                    )  # fmt: skip
                    break
                except RuntimeError as err:
                    # a kernel that exits before its first reply has run nothing (seen once in a
                    # full test session: three kernels started together all died): start anew
                    if "Kernel died before replying to kernel_info" not in str(err) or attempt + 1 == KERNEL_STARTS:
                        raise
                    print(f"[urlkit] notebook {name}: {err}; starting a new kernel", file=sys.stderr, flush=True)
        except TimeoutError as err:
            raise NotebookError(
                f"notebook {source}: a cell ran past {timeout_s} s ({err})"
            ) from err
        except PapermillExecutionError as err:
            raise NotebookError(
                f"notebook {source} failed in cell {err.exec_count}: {err.ename}: "
                f"{' '.join(str(err.evalue).split())} (the executed notebook with the "
                f"traceback: {executed})"
            ) from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m urlkit.notebooks", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True, help="what to do")
    commands.add_parser("list", help="the notebooks in notebooks/")
    run = commands.add_parser("run", help="execute a notebook headlessly")
    run.add_argument("name", help="a notebook of notebooks/ without .py, or 'all'")
    run.add_argument(
        "--runs", required=True, help="a folder of run directories, or wandb:<entity>/<project>"
    )
    run.add_argument(
        "--out", default="outputs/figures",
        help="folder of the figures (default: %(default)s; figures/ holds the committed ones)",
    )
    run.add_argument("--tables", default=None, help="folder of the tables (default: <out>/tables)")
    run.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
        help="another notebook parameter (VALUE read as YAML: 5, true, [a, b])",
    )  # fmt: skip
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["_execute"]:  # the child of execute_notebook: its request on stdin
        try:
            _execute_here(**json.load(sys.stdin))
        except NotebookError as err:
            parser.exit(1, f"error: {err}\n")
        return 0
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
