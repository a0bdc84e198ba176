"""The checks a composed config passes before any work: a typo costs a second, not a run.

Hydra already rejects unknown keys and unknown options of a config group (listing the valid
ones). What it cannot know is which *values* urlkit accepts: ``train.nonfinite=skp``,
``train.max_steps=-1`` (Lightning would read that as "train forever") or
``data.hard_fraction=2`` would otherwise fail minutes later, deep inside a library, or not
at all. :func:`check_train_config` and :func:`check_evaluate_config` raise one
:class:`~urlkit.errors.ConfigError` naming the key, the value given and what is allowed.

Only keys present in the config are checked, so a config group that leaves a key out keeps
the module's own default. (How a config is composed, its resolvers and a run's saved
config.yaml: :mod:`urlkit.config`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from urlkit.errors import ConfigError
from urlkit.paths import REPO_ROOT

CHOICES = {
    "train.nonfinite": ("stop", "skip"),
    "data.retriever": ("bm25", "trec", "pool"),
    "data.on_error": ("raise", "skip"),
    "data.check_pictures": ("verify", "exists"),
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
