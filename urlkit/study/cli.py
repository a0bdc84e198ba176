"""Reproduce a probing study of the paper on this machine: ``python -m urlkit.study figure3``.

A study runs the grid of its experiment(s) (conf/experiment/), executes its notebook on the
runs it produced and prints the verdicts of its findings (effect, 95% interval, detectable
effect)::

    figure3   figure3_weights + figure2_native  -> weight_evolution      -> Figures 2 and 3
    table1    figure3_weights (the diagonal) + table1_weight_direction -> probing_tables -> Table 1
    table2, table3, table5, tau, table15 (same pattern), figure4, figure5 -> negatives_and_tokens
    all       every one of them

Profiles (``--profile``): a Hydra config group, conf/profile/<name>.yaml, added to every run
as ``+profile=<name>`` (so ``python -m urlkit.run +profile=laptop ...`` is one run of it):

    laptop  (default) the embedded SmolLM2-135M on CPU: 3 seeds, 50 steps, 100 test queries
            (planned from a pilot: docs/studies.md). Before training, the study prints its
            runs and the minutes they take here.
    paper   the experiment as written: 3 seeds, conf/train.yaml's steps and evaluation.
    tiny    a tiny random model, 3 steps: checks the whole pipeline in seconds (tests).

Hydra overrides after the name apply to every run and replace a swept key's values, as in
``python -m urlkit.run -m``: ``python -m urlkit.study figure3 seed=0,1,2,3 train.max_steps=300``.
Runs go to ``<output root>/studies/<profile>/<experiment>/<grid point>/``; a study is
resumable: finished runs with the same config are skipped, an unfinished one resumes from its
last checkpoint. A computation is trained once for every experiment it is a grid point of
(Table 3's native arms are figure3_weights' runs), also across studies run one after another
into the same output root: the plan prints which runs are shared. Each run is a
``python -m urlkit.run`` child process (urlkit/study/launch.py); a failed run is reported and
the study goes on, as is a run another study is training at the time (its train.lock).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from urlkit.errors import FILE_ERRORS, ConfigError, message_of
from urlkit.grids import GridError
from urlkit.study.launch import run_all
from urlkit.study.plan import (
    SELECTS_EXPERIMENTS,
    STUDIES,
    StudyError,
    estimate,
    plan,
    profile_names,
    record_experiments,
)


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
        "--profile",
        choices=profile_names(),
        default="laptop",
        help="conf/profile/<name>.yaml (default: %(default)s)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="same as --profile tiny (a dry run in seconds)"
    )
    parser.add_argument(
        "--output-root", default="outputs", help="runs under <this>/studies/<profile>/"
    )
    parser.add_argument(
        "--figures", default=None,
        help="figures folder, tables in <figures>/tables (default: <output root>/studies/<profile>/figures)",
    )
    parser.add_argument("--logger", default="none", help="logger of every run: none, csv or wandb")
    parser.add_argument(
        "--skip-runs", action="store_true", help="only notebooks and findings on existing runs"
    )
    parser.add_argument(
        "--skip-notebooks", action="store_true", help="do not execute the notebooks"
    )
    parser.add_argument(
        "--plan-only", action="store_true", help="print the runs and minutes, train nothing"
    )
    parser.add_argument(
        "--progress-every", type=float, default=30.0, help="seconds between progress lines"
    )
    args = parser.parse_intermixed_args(argv)
    profile = "tiny" if args.tiny else args.profile
    names = list(STUDIES) if args.name == "all" else [args.name]
    root = Path(args.output_root).resolve() / "studies" / profile
    figures = Path(args.figures) if args.figures else root / "figures"

    try:
        planned = plan(names, profile, args.overrides, root, args.logger)
    except (GridError, StudyError, ConfigError, *FILE_ERRORS) as err:  # a value or path urlkit.run refuses
        parser.exit(2, f"error: {message_of(err)}\n")
    runs_left, minutes = estimate(planned)
    for experiment in dict.fromkeys(e for p in planned for e in p.also):
        owners = Counter(p.experiment for p in planned if experiment in p.also)
        whose = " and ".join(f"{owner}'s" + (f" ({n})" if len(owners) > 1 else "") for owner, n in owners.items())
        print(f"[study] {experiment}: {sum(owners.values())} of its runs are {whose} (same config), trained once",
              flush=True)  # fmt: skip
    for name in names:
        own = [p for p in planned if set(p.experiments) & set(STUDIES[name].experiments)]
        left, own_minutes = estimate(own)
        print(
            f"[study] {name}: {len(own)} runs ({left} to train, ~{own_minutes:.0f} min here); "
            f"data: {STUDIES[name].data}",
            flush=True,
        )
    shared, saved = sum(1 for p in planned if p.also), sum(len(p.also) for p in planned)
    print(
        f"[study] plan: {len(planned)} runs ({runs_left} to train), about {minutes:.0f} min here "
        f"(profile {profile}: conf/profile/{profile}.yaml); {shared} of them serve several "
        f"experiments: {saved} grid points not trained twice",
        flush=True,
    )
    if args.plan_only:
        return 0
    for line in record_experiments(planned):  # before training: --skip-runs, a killed study, find them too
        print(f"[study] {line}", flush=True)
    failures = [] if args.skip_runs else run_all(planned, args.progress_every)

    from urlkit.analysis import AnalysisError, load_runs
    from urlkit.analysis.findings import check_findings

    if not args.skip_notebooks:
        from urlkit.notebooks import NotebookError, execute_notebook

        for notebook in dict.fromkeys(STUDIES[n].notebook for n in names):
            # the figures read the studies' own runs, as the findings do (not every run of the
            # profile's folder: `study all` puts Table 5's float16 runs there too)
            experiments = [e for n in names if STUDIES[n].notebook == notebook for e in STUDIES[n].experiments]
            parameters = {"experiments": list(dict.fromkeys(experiments))} if notebook in SELECTS_EXPERIMENTS else None
            try:
                executed = execute_notebook(
                    notebook, root, figures, parameters=parameters,
                    executed=root / "notebooks" / f"{notebook}.ipynb",
                )  # fmt: skip
                print(
                    f"[study] notebook {notebook}: figures in {figures.resolve()} ({executed})",
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
