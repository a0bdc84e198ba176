"""What a study runs: its experiments' grids under a profile, each run's directory and state.

A study (:data:`STUDIES`) names experiments (conf/experiment/), the notebook that reads them
and the findings it checks. A profile is a Hydra config group, conf/profile/<name>.yaml, added
to every run as ``+profile=<name>``: it sets steps, test queries and seeds (through
``hydra.sweeper.params``), and carries the time estimates that :func:`estimate` prints.

A computation is trained once, whichever experiments it is a grid point of: Table 3's native
arms, Table 15's frozen head and Figure 4's K=2 are figure3_weights' runs, Table 2's cl weight
is Table 1's URL(cl, sft), its tau mask the tau table's 1e-3. The plan keys a run by what it
computes (:func:`_setup`: its resolved config but for the experiment's name and what a resume
ignores); a grid point whose computation is planned already, or lies finished (or unfinished)
in another experiment's folder under the same root, is that run. The run keeps its folder and
``experiment_name``; :func:`record_experiments` writes the other experiments it serves into
its ``experiments.txt``, which the analysis reads (``Runs.of_experiments``), so every
study's findings and notebook find all their arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from urlkit.analysis.runset import flatten
from urlkit.config import override_key, read_run_config
from urlkit.config_checks import check_train_config, resolve_path
from urlkit.data.reading import ErrorPolicy, find_data_file, iter_lines
from urlkit.errors import ConfigError
from urlkit.grids import CONF_DIR, config_composer, expand, experiment_params, point_label
from urlkit.records import EXPERIMENTS_FILE, RunDirectory, served_experiments

PROFILES_DIR = CONF_DIR / "profile"
# neither where a run resumed from, how it was logged nor a profile's time estimates change
# what it computes
IGNORED = ("resume", "logger.", "trainer.enable_progress_bar", "profile.")


@dataclass(frozen=True)
class Study:
    experiments: tuple[str, ...]
    notebook: str
    findings: tuple[str, ...]
    data: str  # which data it runs on, and why (printed with the plan)


PROBING = "wordsense, random negatives from the corpus (the paper's 1:1 random:hard mix)"
STUDIES = {
    "figure3": Study(("figure3_weights", "figure2_native"), "weight_evolution",
                     ("Figure 2", "Figure 3"), PROBING),
    # figure3_weights first: Table 1's diagonal is its runs, trained once for both studies
    "table1": Study(("figure3_weights", "table1_weight_direction"), "probing_tables",
                    ("Table 1",), PROBING),
    "table2": Study(("table2_weight_properties",), "probing_tables", ("Table 2",), PROBING),
    "table3": Study(("table3_random_direction",), "probing_tables", ("Table 3",), PROBING),
    "table5": Study(("table5_precision",), "probing_tables", ("Table 5",),
                    PROBING + "; fp16/bf16 underflow counted per step"),
    "tau": Study(("table6_tau",), "probing_tables", ("Appendix B.2",), PROBING),
    "table15": Study(("table15_lm_head",), "probing_tables", ("Table 15",), PROBING),
    "figure4": Study(("figure4_tokens",), "negatives_and_tokens", ("Figure 4",), PROBING),
    "figure5": Study(("figure5_negatives",), "negatives_and_tokens", ("Figure 5",),
                     "manpages: every query has 16 real negatives (wordsense pools: 5.6% do)"),
}  # fmt: skip


# notebooks with an `experiments` parameter (None: every run of the folder): a study passes its own
SELECTS_EXPERIMENTS = {"weight_evolution"}


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


class StudyError(RuntimeError):
    """A study that cannot go on (unknown name, a run directory holding another config)."""


@dataclass
class Planned:
    experiment: str  # the experiment whose folder holds the run (its config's experiment_name)
    point: list[str]  # the Hydra overrides of this run (experiment, grid point, profile, user)
    run_dir: Path
    cfg: object  # DictConfig, as python -m urlkit.run composes it
    state: str  # "new" | "finished" | "resume"
    also: list[str] = field(default_factory=list)  # other experiments with this very run (same config)

    @property
    def experiments(self) -> list[str]:
        """Every experiment this run is a grid point of."""
        return [self.experiment, *self.also]

    def serve(self, experiment: str) -> None:
        if experiment not in self.experiments:
            self.also.append(experiment)

    def current_state(self) -> str:
        """:attr:`state` read again (another study may have trained the run since the plan)."""
        return _state(self.run_dir, flatten(OmegaConf.to_container(self.cfg, resolve=True)))


def plan(
    names: Sequence[str], profile: str, overrides: Sequence[str], root: Path, logger: str
) -> list[Planned]:
    """Every run of the studies, composed, with what to do about its directory."""
    if profile not in profile_names():
        raise StudyError(
            f"no profile {profile!r} in {PROFILES_DIR} (known: {', '.join(profile_names())})"
        )
    fixed = [f"logger={logger}", "++trainer.enable_progress_bar=false"]
    planned: list[Planned] = []
    seen: set[str] = set()
    by_setup: dict[tuple, Planned] = {}  # what each planned run computes
    by_folder: dict[Path, Planned] = {}
    on_disk: dict[tuple, Path] | None = None  # the root's runs by what they compute, read once
    with config_composer() as compose:
        for name in names:
            for experiment in STUDIES[name].experiments:
                if experiment in seen:
                    continue
                seen.add(experiment)
                # the profile may narrow a swept key (its seeds), so read the grid with it
                experiment_params(experiment, compose)  # names a missing or grid-less experiment
                composed = compose([f"experiment={experiment}", f"+profile={profile}"])
                params = {str(k): str(v) for k, v in composed.hydra.sweeper.params.items()}
                swept = {override_key(key) for key in params}
                points = list(expand({"experiment": experiment, **params}, [f"+profile={profile}", *overrides]))
                # a key the user swept too (train.lr=1e-4,2e-4) names the folders as the grid's do
                values: dict[str, set[str]] = {}
                for point in points:
                    for override in point:
                        values.setdefault(override_key(override), set()).add(override.partition("=")[2])
                swept |= {key for key, seen_values in values.items() if len(seen_values) > 1}
                # the grid's keys in its order, then the user's in the order of their names: the
                # same overrides in another order name the same folders (its finished runs kept)
                grid = [override_key(key) for key in params]
                for point in points:
                    ordered = sorted(point, key=lambda override: _label_rank(override, grid))
                    run_dir = root / experiment / point_label(ordered, only=swept)
                    cfg = compose([*point, *fixed])
                    with open_dict(cfg):
                        del cfg["hydra"]
                    # a value urlkit.run refuses (train.max_steps=abc) is refused here, before
                    # the estimate reads it and before each run of the plan fails with it in turn
                    check_train_config(cfg)
                    wanted = flatten(OmegaConf.to_container(cfg, resolve=True))
                    setup = _setup(wanted)
                    if (run_dir / "config.yaml").exists():
                        # the grid point's own folder holds a run (refused if of another config)
                        state = _state(run_dir, wanted)
                        if run_dir in by_folder:  # a run an earlier study of the plan shares
                            by_folder[run_dir].serve(experiment)
                            continue
                        found = Planned(experiment, [*point, *fixed], run_dir, cfg, state)
                    elif setup in by_setup:  # e.g. Table 3's URL(sft, sft), figure3_weights' run
                        by_setup[setup].serve(experiment)
                        continue
                    else:
                        if on_disk is None:
                            on_disk = _runs_on_disk(root)
                        if setup in on_disk:  # trained (or begun) by an earlier study: kept
                            there = on_disk[setup]
                            found = Planned(there.parent.name, [*point, *fixed], there, cfg,
                                            _state(there, wanted), [experiment])  # fmt: skip
                        else:
                            found = Planned(experiment, [*point, *fixed], run_dir, cfg, "new")
                    if found.run_dir in by_folder:  # two runs in one folder: the second would be refused
                        raise StudyError(f"two runs of the plan share {found.run_dir}: "
                                         f"{by_folder[found.run_dir].point} and {found.point}")  # fmt: skip
                    by_setup.setdefault(setup, found)
                    by_folder[found.run_dir] = found
                    planned.append(found)
    return planned


def _runs_on_disk(root: Path) -> dict[tuple, Path]:
    """The run folders under ``root`` (``<experiment>/<grid point>/``) by what they compute.
    One whose config.yaml cannot be read is left out: it is no run to reuse, and its own
    study's plan names it."""
    found: dict[tuple, Path] = {}
    for config in sorted(root.glob("*/*/config.yaml")):
        try:
            saved = flatten(OmegaConf.to_container(read_run_config(config.parent)))
        except (FileNotFoundError, ConfigError):
            continue
        found.setdefault(_setup(saved), config.parent)
    return found


def record_experiments(planned: Sequence[Planned]) -> list[str]:
    """Write into each shared run's folder the experiments it serves besides its own
    (``experiments.txt``, one a line, appended: two studies recording at once lose nothing),
    so that the analysis finds it among each experiment's runs. A run that will train logs
    them to W&B then; a finished one that logged to W&B is told now
    (:func:`urlkit.training.loggers.share_finished_run`). Returns the lines to say: what W&B
    was told, or why it could not be (the folder has the share either way)."""
    said = []
    for p in planned:
        missing = [e for e in p.also if e not in served_experiments(p.run_dir)]
        if missing:
            p.run_dir.mkdir(parents=True, exist_ok=True)
            with (p.run_dir / EXPERIMENTS_FILE).open("a", encoding="utf-8") as out:
                out.write("".join(f"{e}\n" for e in missing))
            if p.state == "finished":
                said.extend(_share_with_wandb(p.run_dir))
    return said


def _share_with_wandb(run_dir: Path) -> list[str]:
    # lazy: W&B is imported only for a finished run that logged to it
    from urlkit.training.loggers import share_finished_run

    try:
        done = share_finished_run(run_dir)
    except Exception as err:  # noqa: BLE001 - W&B's errors are of many kinds; the folder holds the share
        return [f"warning: {run_dir}: W&B could not be told the experiments it now serves ({type(err).__name__}: "
                f"{err}); its experiments.txt has them: analyse the study from its run folders"]
    return [f"{run_dir}: {done}"] if done else []


def _label_rank(override: str, grid: list[str]) -> tuple:
    key = override_key(override)
    return (0, grid.index(key), "") if key in grid else (1, 0, key)


def estimate(planned: Sequence[Planned]) -> tuple[int, float]:
    """(runs to train, minutes) from the profile's time estimates (conf/profile/)."""
    todo = [p for p in planned if p.state != "finished"]
    seconds, counted = 0.0, {}  # a split file's queries, counted once for all the runs reading it
    for p in todo:
        timing = p.cfg.get("profile") or {}
        train, evaluation = p.cfg.train, p.cfg.eval
        # a dev evaluation every eval.every_n_steps steps scores its queries as the test does
        dev_evaluations = int(train.max_steps) // int(evaluation.every_n_steps) if evaluation.every_n_steps else 0
        queries = _queries(p.cfg, "test", counted) + dev_evaluations * _queries(p.cfg, "dev", counted)
        seconds += (
            float(timing.get("seconds_per_run", 0))
            # a step scores queries_per_step x accumulate queries of 1 + N documents; the
            # estimates are for one query of the probing 1 + 4
            + float(timing.get("seconds_per_step", 0)) * int(train.max_steps)
            * int(train.queries_per_step) * int(train.accumulate) * (1 + int(p.cfg.data.n_negatives)) / 5
            + float(timing.get("seconds_per_test_query", 0)) * queries
        )
    return len(todo), seconds / 60


def _queries(cfg, split: str, counted: dict[Path, int]) -> int:
    """Queries one evaluation of ``split`` (dev or test) scores: ``eval.<split>_queries``, or
    (null) all of the split: its lines in a urlkit JSONL folder (``counted``: files counted
    already), else 500 (the wordsense test)."""
    chosen = cfg.eval.get(f"{split}_queries")
    if chosen is not None:
        return int(chosen)
    try:
        found = find_data_file(resolve_path(cfg.data.path), str(cfg.data.get(f"{split}_split")))
    except (FileNotFoundError, TypeError):  # no data.path (yet): each run's own check names it
        found = None
    if found is None:
        return 500
    if found not in counted:  # the data files' own line reader: plain or gzip
        counted[found] = sum(1 for _, line in iter_lines(found, ErrorPolicy("skip")) if line.strip())
    return counted[found]


def _computes(key: str) -> bool:
    """Whether a config key says what a run computes: not the experiment's name (a run serves
    every experiment it is a grid point of) nor what a resume ignores."""
    return key != "experiment_name" and not key.startswith(IGNORED)


def _setup(flat: dict) -> tuple:
    """What a run computes (``flat``: its resolved config, flattened)."""
    return tuple(sorted((k, repr(v)) for k, v in flat.items() if _computes(k)))


def _state(run_dir: Path, wanted: dict) -> str:
    """``wanted``: the run's resolved config, flattened."""
    if not (run_dir / "config.yaml").exists():
        return "new"
    try:
        saved = flatten(OmegaConf.to_container(read_run_config(run_dir)))
    except (FileNotFoundError, ConfigError) as err:  # damaged, not a mapping, a folder
        raise StudyError(f"{err}; delete {run_dir} to run it again") from err
    changed = sorted(
        key
        for key in set(saved) | set(wanted)
        if _computes(key) and saved.get(key) != wanted.get(key)
    )
    if changed:
        raise StudyError(
            f"{run_dir} holds a run with another config (differs in: {', '.join(changed)}); "
            "use another --output-root, or delete that directory to run it again"
        )
    try:
        status = RunDirectory(run_dir).read_info().get("status")
    except ConfigError as err:  # run.json cut short or hand-edited
        raise StudyError(f"{err}; delete {run_dir} to run it again") from err
    if status == "finished":
        return "finished"
    # killed, interrupted or failed: urlkit.run resumes from the last checkpoint (or from
    # scratch in the same directory when there is none)
    return "resume"
