"""OmegaConf resolvers used by conf/ (registered once, before Hydra composes)."""

from __future__ import annotations

from omegaconf import OmegaConf

from urlkit.records import new_run_id


def register_resolvers() -> None:
    # ${urlkit_run_id:} -> a short unique id, so run directories of parallel sweep agents
    # started in the same second never collide. Cached: one id per composed config.
    if not OmegaConf.has_resolver("urlkit_run_id"):
        OmegaConf.register_new_resolver("urlkit_run_id", new_run_id, use_cache=True)
