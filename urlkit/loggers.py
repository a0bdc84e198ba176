"""Experiment trackers (W&B, CSV) from ``cfg.logger``; the run directory is written regardless.

W&B never prompts and never hangs: with ``mode: auto`` it runs online only when an API key
is configured (``WANDB_API_KEY`` or ``wandb login``), otherwise offline into
``<run dir>/wandb/``; sync an offline run later with ``wandb sync <run dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from urlkit.records import RunDirectory

LOGGERS = ("wandb", "csv", "none")


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

        return [CSVLogger(save_dir=str(run.path), name="lightning", version="")]
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(cfg.logger.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    run_name = run.path.name
    return [
        WandbLogger(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group,
            tags=list(cfg.logger.tags),
            name=run_name,
            id=wandb_id,
            resume="allow",
            save_dir=str(run.path),
            mode=mode,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    ]
