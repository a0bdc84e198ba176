"""Train a reranker: ``python -m urlkit.run weight=sft direction=cl``.

Hydra composes the config (``conf/train.yaml``); this app checks it, picks the run directory
and calls :func:`urlkit.train.train`, the whole run read top to bottom.

Reliability (docs/reliability.md): the config is checked before any work; bad input ends
with ``error: <message>`` and exit status 2; ``resume=<run dir>`` continues a killed run
exactly, in its own directory, with the config it started with.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from urlkit.config import check_train_config, register_resolvers
from urlkit.errors import reported_errors
from urlkit.paths import REPO_ROOT
from urlkit.train import train

register_resolvers()
# absolute, so that `python -m urlkit.run`, the `urlkit-run` console script and
# `from urlkit.run import main` all find conf/ (a relative path resolves against the caller)
CONFIG_DIR = str(REPO_ROOT / "conf")


def run_directory(cfg: DictConfig) -> Path:
    """The Hydra output directory, or the directory of the run being resumed."""
    if cfg.get("resume"):
        path = Path(cfg.resume)
        if not (path / "config.yaml").exists():
            raise FileNotFoundError(f"resume={cfg.resume}: not a urlkit run directory (no config.yaml)")
        return path
    return Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)


def resume_config(run_dir: Path) -> DictConfig:
    """The config a resumed run continues with: the one it started with (same data, model,
    loss and steps), plus ``resume=<run_dir>``."""
    saved = OmegaConf.load(Path(run_dir) / "config.yaml")
    saved.resume = str(run_dir)
    return saved


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with reported_errors():  # bad input: "error: <message>", exit status 2
        run_dir = run_directory(cfg)
        if cfg.get("resume"):
            cfg = resume_config(run_dir)
        check_train_config(cfg)
        print(f"[urlkit] run directory: {run_dir}", flush=True)
        metrics = train(cfg, run_dir)
        print(f"[urlkit] final metrics: {metrics}", flush=True)
        return metrics.get("test/ndcg@10")


if __name__ == "__main__":
    main()
