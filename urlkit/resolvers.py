"""OmegaConf resolvers used by conf/ (registered once, before Hydra composes)."""

from __future__ import annotations

import time

from omegaconf import OmegaConf

from urlkit.records import new_run_id


def run_dir(output_root: str, run_name: str, resume: str | None = None) -> str:
    """``resume`` when resuming (the run continues in its own directory), else a new one:
    ``<output_root>/runs/<date>_<time>_<run name>_<unique id>``."""
    if resume:
        return str(resume)
    return f"{output_root}/runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}_{run_name}_{new_run_id()}"


def register_resolvers() -> None:
    # ${urlkit_run_id:} -> a short unique id, so run directories of parallel sweep agents
    # started in the same second never collide. Cached: one id per composed config.
    if not OmegaConf.has_resolver("urlkit_run_id"):
        OmegaConf.register_new_resolver("urlkit_run_id", new_run_id, use_cache=True)
    if not OmegaConf.has_resolver("urlkit_run_dir"):
        OmegaConf.register_new_resolver("urlkit_run_dir", run_dir, use_cache=True)
