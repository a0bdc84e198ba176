"""Experiment grids: the runs one probing experiment or one W&B sweep file stands for.

An experiment, ``conf/experiment/<name>.yaml``, carries its grid as the parameters of Hydra's
basic sweeper, so ``python -m urlkit.run -m experiment=<name>`` runs all of it::

    hydra.sweeper.params:  {weight: "sft,cl", direction: "sft,cl", seed: "0,1,2"}
    -> 12 runs: [experiment=<name>, weight=sft, direction=sft, seed=0], ...

A W&B sweep file, ``sweeps/<name>.yaml``, lists the same grid as W&B parameters; the agent
calls ``python -m urlkit.run key=value ...`` (W&B's ``${args_no_hyphens}``). This module
expands both into lists of Hydra override strings, with Hydra's own semantics (cartesian
product; an extra override of a swept key replaces its values: ``seed=0`` keeps one seed),
and composes a grid point exactly as ``python -m urlkit.run`` would.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from urlkit.config import override_key, register_resolvers
from urlkit.errors import UrlkitError
from urlkit.paths import REPO_ROOT

CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = CONF_DIR / "experiment"
SWEEPS_DIR = REPO_ROOT / "sweeps"


class GridError(UrlkitError, ValueError):
    """An experiment or sweep file whose grid cannot be expanded or composed."""


def experiment_names() -> list[str]:
    """Experiments that carry a grid (``probing`` is the shared setting, not a grid)."""
    names = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:  # PyYAML names "<unicode string>", not the file
            raise GridError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
        sweeper = (spec.get("hydra") or {}).get("sweeper") if isinstance(spec, dict) else None
        if isinstance(sweeper, dict) and sweeper.get("params"):
            names.append(path.stem)
    return names


def expand(params: Mapping[str, Any] | Sequence[str], extra: Sequence[str] = ()) -> list[list[str]]:
    """Hydra basic-sweeper expansion of ``params`` (``{key: "a,b"}`` or ``["key=a,b"]``) + ``extra``."""
    strings = (
        [f"{k}={v}" for k, v in params.items()] if isinstance(params, Mapping) else list(params)
    )
    try:
        overrides = OverridesParser.create().parse_overrides([*strings, *extra])
        return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]
    except HydraException as err:
        raise GridError(f"cannot expand the grid {[*strings, *extra]}: {err}") from err


@contextmanager
def config_composer() -> Iterator:
    """A ``compose(overrides) -> DictConfig`` of ``conf/train.yaml``, as ``python -m urlkit.run``.

    The returned config includes the ``hydra`` node (``hydra.runtime.choices`` names the
    chosen group options, ``hydra.sweeper.params`` an experiment's grid).
    """
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):

        def compose_overrides(overrides: Sequence[str]) -> DictConfig:
            try:
                return compose(
                    config_name="train", overrides=list(overrides), return_hydra_config=True
                )
            except HydraException as err:
                raise GridError(f"the overrides {list(overrides)} do not compose: {err}") from err

        yield compose_overrides


def experiment_params(name: str, compose_overrides=None) -> dict[str, str]:
    """The ``hydra.sweeper.params`` of ``conf/experiment/<name>.yaml`` (after composition)."""
    if not (EXPERIMENTS_DIR / f"{name}.yaml").exists():
        known = ", ".join(experiment_names())
        raise GridError(f"no experiment {name!r} in {EXPERIMENTS_DIR} (known: {known})")
    if compose_overrides is None:
        with config_composer() as composer:
            return experiment_params(name, composer)
    cfg = compose_overrides([f"experiment={name}"])
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) or {}
    if not params:
        raise GridError(
            f"{EXPERIMENTS_DIR / name}.yaml has no hydra.sweeper.params: it is not a grid"
        )
    return {str(k): str(v) for k, v in params.items()}


def experiment_grid(
    name: str, extra: Sequence[str] = (), compose_overrides=None
) -> list[list[str]]:
    """The runs of ``python -m urlkit.run -m experiment=<name> <extra>``, one override list each."""
    params = experiment_params(name, compose_overrides)
    return expand({"experiment": name, **params}, extra)


def read_sweep(path: str | Path) -> dict:
    """A W&B sweep file, checked to be a grid that calls ``python -m urlkit.run`` with overrides."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GridError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise GridError(f"{path}: a W&B sweep file needs a 'parameters' mapping")
    if spec.get("method") != "grid":
        raise GridError(
            f"{path}: method is {spec.get('method')!r}; urlkit sweeps are grids (method: grid)"
        )
    command = [str(part) for part in spec.get("command", [])]
    if "${args_no_hyphens}" not in command or "urlkit.run" not in command:
        raise GridError(
            f"{path}: command must call `python -m urlkit.run ${{args_no_hyphens}}` "
            f"(Hydra overrides key=value), got {command}"
        )
    for key, param in spec["parameters"].items():
        if not isinstance(param, dict) or ("value" in param) == ("values" in param):
            raise GridError(f"{path}: parameter {key!r} needs exactly one of 'value' or 'values'")
    return spec


def sweep_grid(path: str | Path) -> list[list[str]]:
    """The runs a W&B grid sweep launches, as the override strings its agent passes.

    W&B formats each parameter as ``f"{name}={value}"`` (``create_sweep_command_args`` in
    wandb.sdk.launch.sweeps.utils), so a YAML ``true`` reaches Hydra as ``True``.
    """
    spec = read_sweep(path)
    axes = []
    for key, param in spec["parameters"].items():
        values = param["values"] if "values" in param else [param["value"]]
        axes.append([f"{key}={value}" for value in values])
    return [list(point) for point in itertools.product(*axes)]


def parse_point(point: Sequence[str]) -> dict[str, Any]:
    """``["weight=sft", "head.trainable=True"]`` -> ``{"weight": "sft", "head.trainable": True}``."""
    parsed = OverridesParser.create().parse_overrides(list(point))
    return {o.get_key_element(): o.value() for o in parsed}


def point_label(point: Sequence[str], only: Collection[str] | None = None) -> str:
    """A readable, file-name-safe label of a grid point: ``objective=cl,head.trainable=True``.

    ``only``: the keys to show (an experiment's swept keys); ``experiment=`` is never shown.
    """
    parts = []
    for override in point:
        key, value = override_key(override), override.partition("=")[2]
        if key != "experiment" and (only is None or key in only):
            parts.append(f"{key}={value}".replace("/", "-"))
    return ",".join(parts) or "default"
