"""What several probes share: the default experiment's model with random training groups, and
a trained run with a subset of the test split. The probes run as scripts
(``python docs/bench/probes/<probe>.py``), so this folder is on their path."""

from __future__ import annotations

from typing import NamedTuple

import torch
from omegaconf import DictConfig

from urlkit.bench import evaluation
from urlkit.bench.training import Stepper
from urlkit.bench.workload import build, compose_config, load_data
from urlkit.data.groups import GroupCollator, TrainGroups
from urlkit.inference import TrainedReranker


class Training(NamedTuple):
    """The default experiment's config, data and built model, its training groups of 1+N
    (seed 0) and their collator."""

    cfg: DictConfig
    data: object
    built: object
    groups: TrainGroups
    collate: GroupCollator

    def new_groups(self, count: int) -> list[int]:
        """``count`` indices of groups drawn at random (seed 0)."""
        return torch.randperm(len(self.groups), generator=torch.Generator().manual_seed(0))[:count].tolist()


def training(negatives: int = 4, *overrides: str) -> Training:
    """:class:`Training` of the default experiment with 1+``negatives`` groups and config ``overrides``."""
    cfg = compose_config("default", f"data.n_negatives={negatives}", *overrides)
    data = load_data(cfg)
    built = build(cfg, torch.device("cpu"))
    groups = TrainGroups(data.train, data.train_ranking, negatives, hard_fraction=cfg.data.hard_fraction,
                         hard_depth=cfg.data.hard_depth, seed=0)
    return Training(cfg, data, built, groups, GroupCollator(built.renderer, data.train, None))


def default_steps(count: int) -> tuple[Stepper, list[dict]]:
    """urlkit's optimizer step on the default experiment's model and ``count`` collated 1+4
    groups drawn at random (seed 0) from its training split."""
    setup = training()
    return Stepper(setup.built.reranker, setup.cfg), [setup.collate([setup.groups[i]]) for i in setup.new_groups(count)]


def trained_run(run_dir: str, queries: int):
    """A trained run's reranker and renderer, the first ``queries`` test queries and the
    first stage's ranking of them."""
    trained = TrainedReranker.from_run(run_dir)
    data = load_data(compose_config("default"))
    return trained.built.reranker, trained.built.renderer, evaluation.subset(data.test, queries), data.test_ranking


def adapted_default_model(queries: int):
    """The default experiment's model (built), its data and the first ``queries`` test queries,
    with LoRA's B drawn from N(0, 0.01) as after training (zero adapters would merge to nothing)."""
    cfg = compose_config("default")
    data = load_data(cfg)
    built = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        for name, parameter in built.reranker.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.01)
    return built, data, evaluation.subset(data.test, queries)
