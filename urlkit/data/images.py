"""Pictures for vision-language backbones: reading an image file, and its pixel values and
token count through the backbone's image processor (the renderer places the tokens; see
``urlkit.data.prompts``)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from urlkit.data.format import DataError
from urlkit.errors import ConfigError


class ImageInputs:
    """Image path -> (pixel_values, image_grid_thw) through the processor's image processor.

    Token counts are kept for every image seen (one int each); pixel values only for the
    ``cache_size`` most recent images (a 1280-token image is 24 MB of float32 patches).
    """

    def __init__(self, processor: Any, cache_size: int):
        for attribute in ("image_processor", "image_token", "apply_chat_template"):
            if not hasattr(processor, attribute):
                raise ConfigError(f"the processor {type(processor).__name__} has no {attribute!r}: "
                                 "pass a vision-language processor (e.g. Qwen2.5-VL's)")
        self.image_processor = processor.image_processor
        self.token = processor.image_token
        self.token_id = processor.tokenizer.convert_tokens_to_ids(self.token)
        self.merge = getattr(self.image_processor, "merge_size", 1) or 1
        self._counts: dict[str, int] = {}
        self._pixels: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size

    def n_tokens(self, path: str) -> int:
        if path not in self._counts:
            self.pixels(path)
        return self._counts[path]

    def pixels(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._pixels.get(path)
        if cached is not None:
            self._pixels.move_to_end(path)
            return cached
        image = read_image(path)
        try:
            inputs = self.image_processor(images=[image], return_tensors="pt")
        except ValueError as err:  # e.g. an aspect ratio the processor cannot resize
            raise DataError(f"the image processor rejects this image ({image.size[0]} x "
                            f"{image.size[1]} pixels): {err}", path=path,
                            reason="unreadable image") from err
        entry = (inputs["pixel_values"], inputs["image_grid_thw"])
        self._counts[path] = int(entry[1].prod()) // self.merge**2
        self._pixels[path] = entry
        if len(self._pixels) > self._cache_size:
            self._pixels.popitem(last=False)
        return entry


def read_image(path: str | Path):
    """The image at ``path`` as RGB; a :class:`DataError` naming the file if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read the image: {err}", path=path, reason="unreadable image") from err
