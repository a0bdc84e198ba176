"""Experiment trackers (W&B, CSV) from ``cfg.logger``; the run directory is written regardless.

W&B never prompts and never hangs: with ``mode: auto`` it runs online only when an API key
is configured (``WANDB_API_KEY`` or ``wandb login``), otherwise offline into
``<run dir>/wandb/``; sync an offline run later with ``wandb sync <run dir>/wandb/offline-run-*``.

A killed process keeps its W&B records up to the last flush of W&B's ``.wandb`` file, which
W&B does every 15 s by default; urlkit asks for every ``logger.flush_interval_s`` (2 s), so a
SIGKILL costs W&B at most the last couple of seconds. The run directory's history.csv is
written row by row and is always complete (docs/reliability.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from urlkit.records import RunDirectory, served_experiments

LOGGERS = ("wandb", "csv", "none")
WANDB_FLUSH_INTERVAL_S = 2.0  # seconds between flushes of the offline .wandb file (W&B: 15)


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        hosts = netrc.netrc().hosts
        return "online" if "api.wandb.ai" in hosts else "offline"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return "offline"


def make_loggers(cfg: DictConfig, run: RunDirectory, wandb_id: str) -> list:
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ValueError(f"logger={name!r} is not one of {', '.join(LOGGERS)}")
    if name == "none":
        return []
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        # written every step (Lightning's default, 100, keeps a killed attempt's rows in memory)
        return [CSVLogger(save_dir=str(run.path), name="lightning", version=csv_attempt(run), flush_logs_every_n_steps=1)]
    from lightning.pytorch.loggers import WandbLogger

    return [
        WandbLogger(
            save_dir=str(run.path),
            **wandb_run(cfg, run.path, wandb_id, wandb_mode(cfg.logger.mode)),
            **wandb_settings(float(cfg.logger.get("flush_interval_s", WANDB_FLUSH_INTERVAL_S))),
        )
    ]


def wandb_run(cfg: DictConfig, run_dir: Path, wandb_id: str, mode: str) -> dict:
    """Which W&B run a run folder logs to, and its config: ``wandb.init``'s arguments but the
    folder (the training's logger and :func:`share_finished_run` open the same run alike)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    return dict(
        project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group, tags=list(cfg.logger.tags),
        name=Path(run_dir).name, id=wandb_id, resume="allow", mode=mode,
        # dotted keys ("weight.name"): a W&B sweep parameter such as weight=cl would
        # otherwise replace the nested weight dict in the run's config
        config=wandb_config(cfg, run_dir),
    )  # fmt: skip


def wandb_config(cfg: DictConfig, run_dir: Path) -> dict:
    """The run's config for W&B, flat, with ``experiments``: every experiment the run is a grid
    point of, its own and those a study shared it with (experiments.txt), so that an analysis
    from W&B finds a shared arm as one from the folders does. A share recorded after the run
    finished reaches W&B through :func:`share_finished_run` (docs/studies.md)."""
    config = flat_config(OmegaConf.to_container(cfg, resolve=True))
    own = [str(cfg.experiment_name)] if cfg.get("experiment_name") is not None else []
    config["experiments"] = list(dict.fromkeys([*own, *served_experiments(Path(run_dir))]))
    return config


def share_finished_run(run_dir: Path) -> str | None:
    """Tell W&B the experiments a finished run serves now: a later study that reuses it adds
    them to its experiments.txt, which the run, not trained again, never logs. The W&B run is
    opened again as a resumed attempt opens it (its id, ``resume="allow"``, the config that
    attempt would log, ``experiments`` included) and closed without a step: online the run's
    config is updated at once; offline the run's ``wandb/`` gains one more ``offline-run-*``
    folder, which ``wandb sync <run dir>/wandb/offline-run-*`` uploads with the others. Returns
    what was done, for the study to say; None for a run that did not log to W&B."""
    from urlkit.config import read_run_config
    from urlkit.records import read_run_info

    cfg, wandb_id = read_run_config(run_dir), read_run_info(run_dir).get("wandb_id")
    if cfg.get("logger") is None or cfg.logger.get("name") != "wandb" or not wandb_id:
        return None
    mode = wandb_mode(str(cfg.logger.get("mode", "auto")))
    if mode == "disabled":
        return None
    import wandb

    arguments = wandb_run(cfg, run_dir, wandb_id, mode)
    experiment = wandb.init(dir=str(run_dir), allow_val_change=True, **arguments)
    experiment.finish()
    # finish returns before wandb-core has written the offline .wandb file (seen empty under load);
    # teardown waits for the service to close it: the share is on disk before the study goes on
    wandb.teardown()
    where = "updated" if mode == "online" else f"written offline under {Path(run_dir) / 'wandb'} (wandb sync uploads it)"
    return f"W&B run {wandb_id}: experiments={arguments['config']['experiments']} {where}"


def csv_attempt(run: RunDirectory) -> str:
    """The CSV logger's folder for this attempt of the run: ``lightning/attempt-<n>``, a new
    one each time the run is resumed. Lightning's CSVLogger deletes the metrics.csv it finds
    in its folder, which would lose every earlier attempt's rows (history.csv, urlkit's own
    record, is cut back to the checkpoint and kept)."""
    earlier = list((run.path / "lightning").glob("attempt-*"))
    return f"attempt-{len(earlier) + 1}"


def flat_config(config: dict, prefix: str = "") -> dict:
    """``{"weight": {"name": "cl"}}`` -> ``{"weight.name": "cl"}`` (lists stay values)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def finish(loggers: list, metrics: dict[str, float], status: str = "success") -> None:
    """Final metrics into each tracker's summary, then close it. ``wandb.finish()`` matters:
    Lightning's WandbLogger leaves the run open, so the next run of a multirun or a study
    would log into it."""
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if metrics and hasattr(experiment, "summary"):
            experiment.summary.update(metrics)
        logger.finalize(status)
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


def wandb_settings(flush_interval_s: float) -> dict:
    """``settings=`` for ``wandb.init``: flush the ``.wandb`` file every ``flush_interval_s``
    (an ``x_`` setting of wandb-core, passed only where this wandb version knows it)."""
    import wandb

    if "x_transaction_log_flush_interval" not in getattr(wandb.Settings, "model_fields", {}):
        return {}
    return {"settings": wandb.Settings(x_transaction_log_flush_interval=flush_interval_s)}


class _NoProductTips:
    """Lightning's "Tip: try installing litlogger/litmodels" lines: another product's
    advertisement in every run, nothing about this one."""

    @staticmethod
    def filter(record) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def route_lightning_logging() -> None:
    """Lightning's messages once, through the handlers the entry point configured.

    ``import lightning`` gives its logger a console handler of its own and lets records
    propagate too, so under Hydra (which configures the root logger: console and the run's
    log file) every "GPU available" line was printed twice; with the root configured, that
    own handler goes, and the lines reach the console and the log file once. Idempotent."""
    import logging

    lightning = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning.handlers):
            if type(handler) is logging.StreamHandler:
                lightning.removeHandler(handler)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoProductTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoProductTips())
