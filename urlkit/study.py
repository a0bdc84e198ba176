"""Reproduce a probing study of the paper on this machine: ``python -m urlkit.study figure3``.

A study runs the grid of its experiment(s) (conf/experiment/), executes its notebook on the
runs it produced and prints the verdicts of its findings::

    figure3   figure3_weights            -> weight_evolution      -> Figures 2 and 3
    table1    table1_weight_direction    -> probing_tables        -> Table 1
    table2, table3, table5, tau, table15 (same pattern), figure4, figure5 -> negatives_and_tokens
    all       every one of them

Profiles (``--profile``), prepended to the grid's own overrides:

    laptop  (default) the embedded SmolLM2-135M on CPU, about 2 s per training step: 1 seed,
            100 steps, the test split cut to 100 queries, no dev evaluations. figure3 is 2 runs
            (~10 min), table1 4 runs, all 37 runs (a few hours).
    paper   the experiment as written: 3 seeds, conf/train.yaml's steps and evaluation.
    tiny    a tiny random model, 3 steps: checks the whole pipeline in seconds (tests).

Hydra overrides after the name apply to every run and replace a swept key's values, as in
``python -m urlkit.run -m``: ``python -m urlkit.study figure3 seed=0,1,2 train.max_steps=300``.
Runs go to ``<output root>/studies/<profile>/<experiment>/<grid point>/``; a study is
resumable: finished runs with the same config are skipped, an unfinished one resumes from its
last checkpoint. Runs execute in this process one after the other (the model code is loaded
once); a failed run is reported and the study goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf, open_dict

from urlkit.analysis.runs import flatten
from urlkit.grids import GridError, config_composer, expand, experiment_params, point_label


@dataclass(frozen=True)
class Study:
    experiments: tuple[str, ...]
    notebook: str
    findings: tuple[str, ...]


STUDIES = {
    "figure3": Study(("figure3_weights",), "weight_evolution", ("Figure 2", "Figure 3")),
    "table1": Study(("table1_weight_direction",), "probing_tables", ("Table 1",)),
    "table2": Study(("table2_weight_properties",), "probing_tables", ("Table 2",)),
    "table3": Study(("table3_random_direction",), "probing_tables", ("Table 3",)),
    "table5": Study(("table5_precision",), "probing_tables", ("Table 5",)),
    "tau": Study(("table6_tau",), "probing_tables", ("Appendix B.2",)),
    "table15": Study(("table15_lm_head",), "probing_tables", ("Table 15",)),
    "figure4": Study(("figure4_tokens",), "negatives_and_tokens", ("Figure 4",)),
    "figure5": Study(("figure5_negatives",), "negatives_and_tokens", ("Figure 5",)),
}

PROFILES = {
    "laptop": [
        "seed=0", "train.max_steps=100", "eval.every_n_steps=0", "eval.test_queries=100",
        "checkpoint.every_n_steps=25",
    ],
    "paper": [],
    "tiny": [
        "model=tiny", "seed=0", "train.max_steps=3", "train.warmup_steps=1", "eval.every_n_steps=0",
        "eval.test_queries=3", "eval.depth=8", "eval.batch_size=8", "checkpoint.every_n_steps=2",
    ],
}  # fmt: skip


class StudyError(RuntimeError):
    """A study that cannot go on (unknown name, a run directory holding another config)."""


@dataclass
class Planned:
    experiment: str
    point: list[str]
    run_dir: Path
    cfg: object  # DictConfig
    state: str  # "new" | "finished" | "resume"


def plan(
    names: Sequence[str], profile: str, overrides: Sequence[str], root: Path, logger: str
) -> list[Planned]:
    """Every run of the studies, composed, with what to do about its directory."""
    fixed = [f"logger={logger}", "++trainer.enable_progress_bar=false"]
    planned, seen = [], set()
    with config_composer() as compose:
        for name in names:
            for experiment in STUDIES[name].experiments:
                if experiment in seen:
                    continue
                seen.add(experiment)
                params = experiment_params(experiment, compose)
                swept = {key.lstrip("+~") for key in params}
                for point in expand(
                    {"experiment": experiment, **params}, [*PROFILES[profile], *overrides]
                ):
                    run_dir = root / experiment / point_label(point, only=swept)
                    cfg = compose([*point, *fixed, f"output_root={root}"])
                    with open_dict(cfg):
                        del cfg["hydra"]
                    planned.append(Planned(experiment, point, run_dir, cfg, _state(run_dir, cfg)))
    return planned


def _state(run_dir: Path, cfg) -> str:
    if not (run_dir / "config.yaml").exists():
        return "new"
    saved = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    wanted = flatten(OmegaConf.to_container(cfg, resolve=True))
    # neither where a run resumed from nor how it was logged changes what it computes
    ignored = ("resume", "logger.", "trainer.enable_progress_bar")
    changed = sorted(
        key
        for key in set(saved) | set(wanted)
        if not key.startswith(ignored) and saved.get(key) != wanted.get(key)
    )
    if changed:
        raise StudyError(
            f"{run_dir} holds a run with another config (differs in: {', '.join(changed)}); "
            "use another --output-root, or delete that directory to run it again"
        )
    info = run_dir / "run.json"
    if info.exists() and json.loads(info.read_text()).get("status") == "finished":
        return "finished"
    # killed, interrupted or failed: urlkit.run resumes from the last checkpoint (or from
    # scratch in the same directory when there is none)
    return "resume"


class Progress:
    """Prints which run of how many, its step, and the study's ETA (from its steps per second)."""

    def __init__(self, runs: list[Planned], every_s: float):
        self.total_steps = sum(int(p.cfg.train.max_steps) for p in runs if p.state != "finished")
        self.done_steps, self.every_s, self.started = 0, every_s, time.time()
        self.current: Planned | None = None
        self.label, self._stop = "", threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def begin(self, planned: Planned, label: str) -> None:
        self.current, self.label = planned, label
        print(
            f"[study] {label} {planned.run_dir.parent.name}/{planned.run_dir.name} | {self.eta()}",
            flush=True,
        )

    def end(self, planned: Planned) -> None:
        self.done_steps += int(planned.cfg.train.max_steps)
        self.current = None

    def _current_steps(self) -> int:
        history = self.current.run_dir / "history.csv" if self.current else None
        if not history or not history.exists():
            return 0
        return max(0, sum(1 for _ in history.open()) - 1)

    def eta(self) -> str:
        elapsed = time.time() - self.started
        done = self.done_steps + self._current_steps()
        left = self.total_steps - done
        if done == 0:
            return f"{left} steps to go, ETA after the first steps"
        return f"elapsed {_duration(elapsed)}, ETA {_duration(elapsed / done * left)} ({left} of {self.total_steps} steps to go)"

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.current is not None:
                step, of = self._current_steps(), int(self.current.cfg.train.max_steps)
                print(f"[study] {self.label} step {step}/{of} | {self.eta()}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_all(planned: list[Planned], progress_every_s: float = 30.0) -> list[tuple[Planned, str]]:
    """Train every run not finished yet; returns the failures (run, error message)."""
    from urlkit.train import train  # the training stack loads only when there is something to train

    failures = []
    todo = [p for p in planned if p.state != "finished"]
    print(
        f"[study] {len(planned)} runs, {len(planned) - len(todo)} already finished, {len(todo)} to train",
        flush=True,
    )
    with Progress(planned, progress_every_s) as progress:
        for i, item in enumerate(todo, 1):
            progress.begin(item, f"run {i}/{len(todo)}")
            if item.state == "resume":
                with open_dict(item.cfg):
                    item.cfg.resume = str(item.run_dir)
            try:
                train(item.cfg, item.run_dir)
            except Exception as err:  # one failed run must not lose the others' hours
                failures.append((item, f"{type(err).__name__}: {err}"))
                print(f"[study] FAILED {item.run_dir}: {type(err).__name__}: {err}", flush=True)
            progress.end(item)
            gc.collect()
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m urlkit.study", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    parser.add_argument("name", choices=[*STUDIES, "all"], help="the study")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every run (key=value, key=a,b)"
    )
    parser.add_argument(
        "--profile", choices=list(PROFILES), default="laptop", help="default: %(default)s"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="same as --profile tiny (a dry run in seconds)"
    )
    parser.add_argument(
        "--output-root", default="outputs", help="runs under <this>/studies/<profile>/"
    )
    parser.add_argument(
        "--figures", default="figures", help="figures folder (tables in <figures>/tables)"
    )
    parser.add_argument("--logger", default="none", help="logger of every run: none, csv or wandb")
    parser.add_argument(
        "--skip-runs", action="store_true", help="only notebooks and findings on existing runs"
    )
    parser.add_argument(
        "--skip-notebooks", action="store_true", help="do not execute the notebooks"
    )
    parser.add_argument(
        "--progress-every", type=float, default=30.0, help="seconds between progress lines"
    )
    args = parser.parse_intermixed_args(argv)
    profile = "tiny" if args.tiny else args.profile
    names = list(STUDIES) if args.name == "all" else [args.name]
    root = Path(args.output_root).resolve() / "studies" / profile

    try:
        planned = plan(names, profile, args.overrides, root, args.logger)
    except (GridError, StudyError) as err:
        parser.exit(2, f"error: {err}\n")
    failures = [] if args.skip_runs else run_all(planned, args.progress_every)

    from urlkit.analysis import AnalysisError, load_runs
    from urlkit.findings import check_findings

    if not args.skip_notebooks:
        from urlkit.notebooks import NotebookError, execute_notebook

        for notebook in dict.fromkeys(STUDIES[n].notebook for n in names):
            try:
                executed = execute_notebook(
                    notebook, root, args.figures, executed=root / "notebooks" / f"{notebook}.ipynb"
                )
                print(
                    f"[study] notebook {notebook}: figures in {Path(args.figures).resolve()} ({executed})",
                    flush=True,
                )
            except NotebookError as err:
                failures.append((None, str(err)))
                print(f"[study] NOTEBOOK FAILED: {err}", flush=True)
    try:
        runs = load_runs(root)
    except AnalysisError as err:
        parser.exit(1, f"error: {err}\n")
    print(f"[study] findings on {len(runs)} runs in {root}:")
    for verdict in check_findings(runs, only=[f for n in names for f in STUDIES[n].findings]):
        print(f"- {verdict}")
    for item, message in failures:
        print(f"[study] failed: {item.run_dir if item else 'notebook'}: {message}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
