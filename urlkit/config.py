"""The composed config: the OmegaConf resolvers conf/ uses, a run's saved config.yaml, and
the keys the command line's overrides set.

Resolvers (:func:`register_resolvers`, called once before Hydra composes): ``${urlkit_run_id:}``
and ``${urlkit_run_dir:...}``, the run directory of a new, resumed or requeued run;
``${urlkit_folder_name:...}``, a run name as one folder name.

The checks a config passes before any work (values in range, files there) are
:mod:`urlkit.config_checks`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from urlkit import slurm
from urlkit.errors import ConfigError, reported_errors
from urlkit.records import new_run_id


def run_dir(output_root: str, run_name: str, resume: str | None = None, overrides: Iterable[str] = ()) -> str:
    """``resume`` (the run continues in its own directory), the run a requeued SLURM job started
    with these command-line ``overrides`` (:func:`urlkit.slurm.requeued_run`), else a new one:
    ``<output_root>/runs/<date>_<time>_<run name>_<unique id>``.

    Processes that torchrun or SLURM start together compose their configs separately, so a
    time and a random id would give each rank its own directory: there the job's id names
    it instead (``<output_root>/runs/<job>_<run name>``), the same on every rank (urlkit's
    run directory is rank 0's; the other ranks write nothing in it)."""
    with reported_errors():  # before Hydra writes .hydra/ and run.log in the folder (a mistyped one too)
        if resume:
            check_resume_target(resume)
        found = resume or slurm.requeued_run(output_root, overrides or ())
    if found:
        return str(found)
    name, job = folder_name(run_name), launcher_job_id()
    if job:
        return f"{output_root}/runs/{job}_{name}"
    return f"{output_root}/runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}_{name}_{new_run_id()}"


def folder_name(name: str) -> str:
    """A run name as one folder name: ``run_name=ablation/lr`` would put the run a folder
    down, in a folder that looks like a run and is none (``../x``: out of runs/)."""
    return str(name).replace("/", "-").replace(os.sep, "-")


def read_run_config(run_dir: str | Path) -> DictConfig:
    """A training run's saved config.yaml; an error naming the folder or the file when it is
    missing or damaged (a hand edit, a copy cut short), not a YAML parser's traceback."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a urlkit run directory (no config.yaml)")
    try:
        cfg = OmegaConf.load(config_file)
    except Exception as err:  # noqa: BLE001 - any unreadable config is the same answer
        raise ConfigError(f"{config_file} cannot be read ({type(err).__name__}: {' '.join(str(err).split())})") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{config_file} is not a run config (a YAML {type(cfg).__name__}, not a mapping)")
    return cfg


def check_resume_target(path: str | Path) -> DictConfig:
    """The config.yaml of the training run ``resume=<path>`` names (with the ``train`` and ``trainer``
    keys only a training run's has, and a run.json; an evaluation's folder has a config.yaml too)."""
    folder = Path(path)
    try:
        saved = read_run_config(folder)
    except FileNotFoundError:
        raise FileNotFoundError(f"resume={path}: not a urlkit run directory (no config.yaml)") from None
    except ConfigError as err:  # damaged, or not a mapping
        raise ConfigError(f"resume={path}: not a urlkit run directory ({err})") from err
    missing = [key for key in ("train", "trainer") if key not in saved]
    if missing or not (folder / "run.json").is_file():
        what = f"its config.yaml has no {' or '.join(missing)}" if missing else "no run.json"
        raise ConfigError(f"resume={path}: not a urlkit training run directory ({what}; an evaluation's output "
                          "folder cannot be resumed)")  # fmt: skip
    return saved


def launched_as_other_rank() -> bool:
    """True in a process that a launcher started as a rank other than 0, read from the
    launchers' variables (torchrun's RANK, SLURM's SLURM_PROCID, Lightning's NODE_RANK and
    LOCAL_RANK): Hydra writes its files before any Trainer exists to say it (training itself
    asks Lightning, ``urlkit.training.distributed.launch_rank``)."""
    slurm = os.environ.get("SLURM_PROCID") if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 else None
    ranks = [os.environ.get("RANK"), slurm, os.environ.get("NODE_RANK"), os.environ.get("LOCAL_RANK")]
    return any(rank not in (None, "", "0") for rank in ranks)


def print_on_rank_zero(*args, **print_options) -> None:
    """``print``, in the launch's rank 0 alone (every rank loads, builds and finishes a run)."""
    if not launched_as_other_rank():
        print(*args, **print_options)


def log_file(output_dir: str, job_name: str) -> str:
    """Hydra's log file: ``<run dir>/<job name>.log``; the null device on ranks other than 0
    (the run directory is rank 0's alone)."""
    return os.devnull if launched_as_other_rank() else f"{output_dir}/{job_name}.log"


def override_key(override: str) -> str:
    """The key a Hydra command-line override sets, as Hydra's override grammar writes it:
    ``key=value``, ``+key=value``, ``++key=value``, ``~key`` and ``~key=value`` all set
    ``key``; a config group placed in another package keeps its package (``data@eval=x``:
    ``data@eval``, not the ``data`` group's own place), a group path its slashes
    (``hydra/launcher=...``). The value may hold ``=`` (``data.run_file=a=b.trec``); the key
    never does."""
    # Hydra's grammar puts one ~, + or ++ before a key, and a key never starts with either
    return str(override).split("=", 1)[0].lstrip("+~")


def sets_data(overrides: Iterable[str]) -> bool:
    """Whether command-line overrides name another dataset (``data=...``, ``data.path=...``,
    ``data.dataset=...``, ``data.mixture...``): ``python -m urlkit.evaluate run_dir=<run>`` scores
    the run's own data otherwise, other ``data.*`` keys (``data.test_split=dev``) set on it."""
    keys = [override_key(o) for o in overrides or []]
    return any(key in ("data", "data.path", "data.dataset") or key.startswith("data.mixture") for key in keys)


def evaluation_name(run_dir: str | None, name: str, overrides) -> str:
    """The dataset an evaluation's folder is named after: a trained run's own data unless the
    command line sets it (:func:`sets_data`), not the default's."""
    if not run_dir or sets_data(overrides):
        return name
    try:
        return str(OmegaConf.select(read_run_config(run_dir), "data.name", default=name))
    except (FileNotFoundError, ConfigError):  # load_trained says so, naming the path, not Hydra
        return name


def hydra_subdir() -> str | None:
    """Hydra's ``output_subdir`` (its copy of the config): none on ranks other than 0."""
    return None if launched_as_other_rank() else ".hydra"


def launcher_job_id() -> str | None:
    """The id shared by the processes of one torchrun rendezvous or SLURM job step (None
    outside them, and for a single-task SLURM job, where the usual unique name is kept)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return None


def launch_id() -> str | None:
    """An id every process of one launch computes alike, and a relaunch does not: rank 0's
    ``URLKIT_LAUNCH`` (the ranks Lightning's launcher starts inherit its environment), else
    the SLURM job step or torchrun rendezvous with its restart count (a requeued job keeps its
    job id, not its restart count), else the rendezvous address of nodes started by hand.
    Rank 0 records it in run.json, so a rank other than 0 can tell the run its own rank 0 has
    just started from one an earlier launch left in the folder (None: no launcher's id)."""
    if os.environ.get("URLKIT_LAUNCH"):
        return os.environ["URLKIT_LAUNCH"]
    job = launcher_job_id()
    if job:
        restarts = os.environ.get("SLURM_RESTART_COUNT" if job.startswith("slurm-") else "TORCHELASTIC_RESTART_COUNT")
        return f"{job}.restart-{restarts or 0}"
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    return None


def register_resolvers() -> None:
    """Register the resolvers conf/ uses (idempotent)."""
    # ${urlkit_run_id:} -> a short unique id, so run directories of parallel sweep agents
    # started in the same second never collide. Cached: one id per composed config.
    if not OmegaConf.has_resolver("urlkit_run_id"):
        OmegaConf.register_new_resolver("urlkit_run_id", new_run_id, use_cache=True)
    if not OmegaConf.has_resolver("urlkit_run_dir"):
        OmegaConf.register_new_resolver("urlkit_run_dir", run_dir, use_cache=True)
    if not OmegaConf.has_resolver("urlkit_folder_name"):
        OmegaConf.register_new_resolver("urlkit_folder_name", folder_name)
    if not OmegaConf.has_resolver("urlkit_log_file"):
        OmegaConf.register_new_resolver("urlkit_log_file", log_file)
    if not OmegaConf.has_resolver("urlkit_evaluation_name"):
        OmegaConf.register_new_resolver("urlkit_evaluation_name", evaluation_name)
    if not OmegaConf.has_resolver("urlkit_hydra_subdir"):
        OmegaConf.register_new_resolver("urlkit_hydra_subdir", hydra_subdir)
