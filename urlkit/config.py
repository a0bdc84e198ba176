"""The composed config: the OmegaConf resolvers conf/ uses, and the checks that run before any work.

Resolvers (:func:`register_resolvers`, called once before Hydra composes): ``${urlkit_run_id:}``
and ``${urlkit_run_dir:...}``, the run directory of a new or resumed run;
``${urlkit_folder_name:...}``, a run name as one folder name.

Checks: a typo costs a second, not a run.

Hydra already rejects unknown keys and unknown options of a config group (listing the valid
ones). What it cannot know is which *values* urlkit accepts: ``train.nonfinite=skp``,
``train.max_steps=-1`` (Lightning would read that as "train forever") or
``data.hard_fraction=2`` would otherwise fail minutes later, deep inside a library, or not
at all. :func:`check_train_config` and :func:`check_evaluate_config` raise one
:class:`~urlkit.errors.ConfigError` naming the key, the value given and what is allowed.

Only keys present in the config are checked, so a config group that leaves a key out keeps
the module's own default.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from urlkit.errors import ConfigError, reported_errors
from urlkit.paths import REPO_ROOT
from urlkit.records import new_run_id


def run_dir(output_root: str, run_name: str, resume: str | None = None) -> str:
    """``resume`` when resuming (the run continues in its own directory), else a new one:
    ``<output_root>/runs/<date>_<time>_<run name>_<unique id>``.

    Processes that torchrun or SLURM start together compose their configs separately, so a
    time and a random id would give each rank its own directory: there the job's id names
    it instead (``<output_root>/runs/<job>_<run name>``), the same on every rank (urlkit's
    run directory is rank 0's; the other ranks write nothing in it)."""
    if resume:
        # here, when Hydra resolves its run directory: once that returns, Hydra writes its
        # .hydra/ copy of the config and run.log into the folder (a mistyped path included)
        with reported_errors():
            check_resume_target(resume)
        return str(resume)
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


def check_resume_target(path: str | Path) -> None:
    """``resume=<path>`` names a training run: its config.yaml (with the ``train`` and
    ``trainer`` keys only a training run's has) and run.json. An evaluation's output folder
    also has a config.yaml, and would fail later with a library traceback."""
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


def sets_data(overrides: Iterable[str]) -> bool:
    """Whether command-line overrides name another dataset (``data=...``, ``data.path=...``,
    ``data.dataset=...``, ``data.mixture...``): ``python -m urlkit.evaluate run_dir=<run>`` scores
    the run's own data otherwise, other ``data.*`` keys (``data.test_split=dev``) set on it."""
    keys = [str(o).split("=")[0].lstrip("+~") for o in overrides or []]
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


CHOICES = {
    "train.nonfinite": ("stop", "skip"),
    "data.retriever": ("bm25", "trec", "pool"),
    "data.on_error": ("raise", "skip"),
    "data.format": ("auto", "jsonl", "beir", "mbeir"),
    "logger.name": ("wandb", "csv", "none"),
    "logger.mode": ("auto", "online", "offline", "disabled"),
    "weight.dtype": ("float32", "float64", "float16", "bfloat16"),
    "loss": ("url", "native_sft", "native_infonce"),
    "direction.form": ("auto", "sft", "cl"),
    "data.random_from": ("pool", "corpus"),
}
# a native loss has one weight and one direction: the pair whose URL it equals
NATIVE_LOSSES = {"native_sft": ("sft", "sft"), "native_infonce": ("cl", "cl")}
# key -> smallest allowed integer (None allowed where the comment says so in conf/)
INTEGERS = {
    "train.max_steps": 1,
    "train.queries_per_step": 1,
    "train.accumulate": 1,
    "train.warmup_steps": 0,
    "train.max_consecutive_skips": 1,
    "data.n_negatives": 1,
    "data.mixture_block": 1,
    "data.hard_depth": 1,
    "eval.every_n_steps": 0,
    "eval.depth": 1,
    "eval.batch_size": 1,
    "log.histogram_every_n_steps": 0,
    "checkpoint.every_n_steps": 1,
    "seed": 0,  # Lightning refuses a negative one, with a traceback, after the model loads
    "head.num_tokens": 2,  # the relevant and the irrelevant token at least
    "depth": 1,  # urlkit.evaluate
    "batch_size": 1,
}
# switches read with bool(): the string 'false' or 'maybe' would turn them on
BOOLEANS = ("head.trainable", "train.gradient_checkpointing", "eval.merge_lora", "data.ignore_identical_ids")
NULLABLE_INTEGERS = {"train.chunk_size": 1, "eval.dev_queries": 1, "eval.test_queries": 1, "max_queries": 1}
# key -> (lowest, highest, lowest excluded)
NUMBERS = {
    "train.lr": (0.0, math.inf, True),
    "train.weight_decay": (0.0, math.inf, False),
    "data.hard_fraction": (0.0, 1.0, False),
    "weight.temperature": (0.0, math.inf, True),
    "weight.beta": (0.0, math.inf, True),
    "weight.tau": (0.0, 1.0, False),
    "logger.flush_interval_s": (0.0, math.inf, False),
}
NULLABLE_NUMBERS = {"train.grad_clip": (0.0, math.inf, True)}


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value ``python -m urlkit.run`` cannot use
    (``FileNotFoundError`` for a configured path that does not exist)."""
    _check_missing(cfg)
    _check_values(cfg)
    _check_paths(cfg)
    _check_mixture(cfg)


def temperature_note(cfg: DictConfig) -> str | None:
    """URL keeps W_cl a probability (urlkit.loss.url): at a cl temperature T != 1 the two
    objectives of Figure 2 train at learning rates T apart. None at T = 1 or another weight."""
    t = float(cfg.weight.get("temperature") or 1.0)
    if t == 1.0 or cfg.weight.get("name") != "cl":
        return None
    return (f"weight.temperature={t:g}: URL(cl, cl)'s gradient is {t:g} times native InfoNCE's "
            f"(loss=native_infonce) at this temperature; compare the two at T = 1, or give URL train.lr x {1 / t:g}")


def check_evaluate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value ``python -m urlkit.evaluate`` cannot use."""
    own_data = bool(cfg.get("run_dir"))  # a trained run brings its data unless data is overridden
    _check_missing(cfg, ignore=("data",) if own_data else ())
    _check_values(cfg)
    if not own_data:
        _check_paths(cfg)


def resolve_path(path: str | Path, key: str = "data.path") -> Path:
    """A path as given, else relative to the urlkit checkout (where the embedded data lives)."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    if not candidate.is_absolute() and (REPO_ROOT / candidate).exists():
        return REPO_ROOT / candidate
    raise FileNotFoundError(f"{key}={path}: no such file or directory")


def _check_paths(cfg: DictConfig) -> None:
    if "data" in cfg and _get(cfg, "data.path") is None:
        raise ConfigError("data.path must be given: data.path=<a dataset folder or M-BEIR file>")
    if "data" in cfg:
        _check_data_files(cfg.data, "data")


def _check_data_files(data: DictConfig, prefix: str) -> None:
    """The files one data config names exist (``prefix``: how errors name its keys, ``data`` or
    a mixture's ``data.mixture.<source>``)."""
    if data.get("path") is not None:
        resolve_path(data.path, f"{prefix}.path")
    pools = data.get("pool")  # M-BEIR: a pool file per split, checked before any work
    for split, pool in (pools.items() if isinstance(pools, DictConfig) else ()):
        if pool is not None:
            resolve_path(pool, f"{prefix}.pool.{split}")
    if data.get("retriever") == "trec":
        if not data.get("run_file"):
            raise ConfigError(f"{prefix}.retriever=trec needs {prefix}.run_file=<a TREC run file>")
        if not Path(data.run_file).is_file():  # read as given (urlkit.data.candidates.read_trec_run)
            raise FileNotFoundError(f"{prefix}.run_file={data.run_file}: no such file")


def _check_missing(cfg: DictConfig, ignore: Iterable[str] = ()) -> None:
    # a suite's own keys first: its entries' paths interpolate them (benchmark.root), and
    # missing_keys raises on an interpolation to a missing value instead of listing it
    suite = cfg.get("benchmark") if "benchmark" in cfg else None
    if isinstance(suite, DictConfig):
        unset = [f"benchmark.{key}" for key in suite if OmegaConf.is_missing(suite, key)]
        if unset:
            shown = " ".join(f"{key}=..." for key in unset)
            raise ConfigError(f"{', '.join(unset)} must be given on the command line ({shown})")
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k.split(".")[0] not in ignore)
    if missing:
        shown = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} must be given on the command line ({shown})")


def _check_values(cfg: DictConfig) -> None:
    loss = _get(cfg, "loss")
    if loss in NATIVE_LOSSES:
        pair = (_get(cfg, "weight.name"), _get(cfg, "direction.name"))
        if pair != NATIVE_LOSSES[loss]:
            weight, direction = NATIVE_LOSSES[loss]
            raise ConfigError(
                f"loss={loss} trains with weight={weight} direction={direction}, not weight={pair[0]} "
                f"direction={pair[1]}: use +objective={loss}"
            )
    _check_ranges(cfg)


def _check_ranges(cfg: DictConfig, only: str = "", name: Any = str) -> None:
    """Each known key of ``cfg`` (those starting with ``only``) within its choices or range;
    ``name(key)`` is how the error names it (a mixture source's keys are its own)."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key) if key.startswith(only) else None
        if value is not None and value not in allowed:
            raise ConfigError(f"{name(key)}={value!r} is not one of {', '.join(allowed)}")
    for key in BOOLEANS:
        value = _get(cfg, key) if key.startswith(only) else None
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{name(key)}={value!r} must be true or false")
    for key, lowest in {**INTEGERS, **NULLABLE_INTEGERS}.items():
        value = _get(cfg, key, default=...) if key.startswith(only) else ...
        if value is ... or (value is None and key in NULLABLE_INTEGERS):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            null = " or null" if key in NULLABLE_INTEGERS else ""
            raise ConfigError(f"{name(key)}={value!r} must be an integer >= {lowest}{null}")
    for key, (low, high, open_low) in {**NUMBERS, **NULLABLE_NUMBERS}.items():
        value = _get(cfg, key, default=...) if key.startswith(only) else ...
        if value is ... or (value is None and key in NULLABLE_NUMBERS):
            continue
        number = _as_number(value)
        if number is None or not (low < number if open_low else low <= number) or number > high:
            low_text = f"> {low:g}" if open_low else f">= {low:g}"
            bound = low_text if math.isinf(high) else f"{low_text} and <= {high:g}"
            raise ConfigError(f"{name(key)}={value!r} must be a number {bound}")


def _check_mixture(cfg: DictConfig) -> None:
    """Each ``data.mixture`` source before anything loads: only ``weight`` and the data keys
    (a misspelt key would silently keep its default), each value in range, its files there,
    every error naming ``data.mixture.<source>.<key>``."""
    mixture = _get(cfg, "data.mixture")
    if mixture is None:
        return
    if not isinstance(mixture, DictConfig):
        raise ConfigError(f"data.mixture must map source names to {{weight: w, <data keys>}}, got {mixture!r}")
    base = {k: v for k, v in cfg.data.items() if k != "mixture"}
    for source, entry in mixture.items():
        prefix = f"data.mixture.{source}"
        if not isinstance(entry, DictConfig):
            raise ConfigError(f"{prefix} must map data keys to values, e.g. {{weight: 1, path: ...}}, got {entry!r}")
        unknown = sorted(str(k) for k in entry if k != "weight" and k not in base)
        if unknown:
            raise ConfigError(f"{prefix}: no data key {', '.join(unknown)} (a source takes weight and the keys of "
                              f"data: {', '.join(sorted(map(str, base)))})")  # fmt: skip
        weight = _as_number(entry.get("weight", 1.0))
        if weight is None or weight <= 0:
            raise ConfigError(f"{prefix}.weight={entry.get('weight')!r} must be a number > 0")
        merged = OmegaConf.merge(OmegaConf.create(base), {k: v for k, v in entry.items() if k != "weight"})
        view = OmegaConf.create({"data": merged})
        _check_ranges(view, only="data.", name=lambda key, prefix=prefix: prefix + key.removeprefix("data"))
        _check_data_files(merged, prefix)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # "1e-4" arrives as a string when YAML does not read it as a float
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return default
        node = node[part]
    return node
