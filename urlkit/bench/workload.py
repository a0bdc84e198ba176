"""What the benchmark runs: the default experiment's config, model and data, nothing invented.

The config is composed from ``conf/train.yaml`` exactly as ``python -m urlkit.run`` composes
it (``model=smollm2_135m`` by default, ``model=tiny`` for tests), the reranker is built by
``urlkit.build.build_reranker`` (backbone + LoRA + gathered-row head), training groups come
from ``TrainGroups`` + ``GroupCollator`` on the config's dataset (wordsense: real WordNet
sentences and glosses), evaluation pairs from the first stage of its test split (both loaded by
``urlkit.build``, as a training run loads them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from urlkit.build import Built, build_reranker, evaluation_set, training_workload
from urlkit.data.candidates import Ranking
from urlkit.data.format import Split
from urlkit.data.groups import GroupCollator, TrainGroups

MODELS = {"default": "smollm2_135m", "tiny": "tiny"}


def compose_config(model: str, *overrides: str) -> DictConfig:
    """``conf/train.yaml`` with ``model=<model>`` and ``overrides`` (Hydra syntax)."""
    from hydra import compose, initialize_config_dir

    from urlkit.config import register_resolvers
    from urlkit.paths import REPO_ROOT

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"model={MODELS.get(model, model)}", "logger=none", *overrides])


def build(cfg: DictConfig, device: torch.device, dtype: str | None = None, quiet: bool = True) -> Built:
    """The trainable reranker of ``cfg`` (LoRA on the frozen backbone), on ``device``;
    ``dtype`` overrides ``model.dtype`` (the frozen weights' dtype; LoRA and head stay float32)."""
    import contextlib
    import io

    if dtype is not None:
        cfg = cfg.copy()
        cfg.model.dtype = dtype
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        built = build_reranker(cfg, trainable=True)
    _adapters_in_float32(built.reranker)
    built.reranker.to(device)
    return built


def _adapters_in_float32(reranker: torch.nn.Module) -> None:
    """LoRA weights train in float32 whatever the frozen weights' dtype (peft follows the
    base layer's dtype when it injects adapters; bf16 adapters would lose small updates)."""
    for parameter in reranker.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


@dataclass
class Data:
    train: Split
    train_ranking: Ranking
    test: Split
    test_ranking: Ranking


def load_data(cfg: DictConfig, quiet: bool = True) -> Data:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        training = training_workload(cfg)
        test = evaluation_set(cfg.data, cfg.data.test_split, cfg.eval.depth)
    return Data(training.split, training.ranking, test.split, test.ranking)


def training_batches(cfg: DictConfig, data: Data, renderer, n_negatives: int, count: int,
                     chunk_size: int | None = None, device: torch.device | None = None) -> list[dict]:
    """``count`` micro-batches of ``train.queries_per_step`` groups of 1 positive + N negatives,
    collated as the training loop collates them. Only *full* groups are taken (the first
    queries, in split order, with N real negatives): wordsense draws a query's negatives from
    its word's senses, so most of its groups are padded to fewer documents, which would make
    "1+16" measure fewer than 17 documents."""
    groups = TrainGroups(data.train, data.train_ranking, n_negatives, hard_fraction=cfg.data.hard_fraction,
                         hard_depth=cfg.data.hard_depth, seed=cfg.seed)
    collate = GroupCollator(renderer, data.train, chunk_size)
    per_step = int(cfg.train.queries_per_step)
    full = []
    for index in range(len(groups)):
        if len(full) == count * per_step:
            break
        item = groups[index]
        if bool(item["mask"].all()):
            full.append(item)
    if len(full) < count * per_step:
        raise ValueError(f"{data.train.name} has only {len(full)} queries with {n_negatives} negatives; "
                         f"the benchmark needs {count * per_step}")
    batches = [collate(full[i * per_step : (i + 1) * per_step]) for i in range(count)]
    return [to_device(batch, device) for batch in batches] if device is not None else batches


def evaluation_pairs(data: Data, depth: int, queries: int) -> list[tuple]:
    """(query, document) pairs of the first ``queries`` test queries' top-``depth`` candidates."""
    return [(q, data.test.corpus[d]) for q in data.test.queries[:queries] for d, _ in data.test_ranking.get(q.id, [])[:depth]]


def to_device(batch, device: torch.device):
    """A collated batch (nested dicts and lists of tensors) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list) and batch and isinstance(batch[0], (dict, torch.Tensor)):
        return [to_device(value, device) for value in batch]
    return batch
