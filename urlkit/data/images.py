"""Pictures for vision-language backbones: reading an image file, and its pixel values and
token count through the backbone's image processor (the renderer places the tokens; see
``urlkit.data.prompts``); and the cheap check a loader makes of every picture a dataset names
(:func:`picture_problem`). Torch is imported by the image processor's users only: a loader that
checks pictures does not pay for it."""

from __future__ import annotations

import itertools
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urlkit.data.format import DataError
from urlkit.errors import ConfigError

if TYPE_CHECKING:
    import torch


class ImageInputs:
    """Image path -> (pixel_values, image_grid_thw) through the processor's image processor.

    Token counts are kept for every image seen (one int each); pixel values only for the
    ``cache_size`` most recent images (a 1280-token image is 24 MB of float32 patches). Both
    are kept with the file's :func:`image_version` and read again when it changed (a service
    writing each upload to one temporary path scored the first picture every time).
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
        self._counts: dict[str, tuple[Version, int]] = {}
        self._pixels: OrderedDict[str, tuple[Version, tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._cache_size = cache_size

    def n_tokens(self, path: str) -> int:
        version, count = self._counts.get(path, (None, 0))
        if version is None or version != image_version(path):
            self.pixels(path)
            version, count = self._counts[path]
        return count

    def pixels(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        version = image_version(path)
        cached = self._pixels.get(path)
        if cached is not None and cached[0] == version:
            self._pixels.move_to_end(path)
            return cached[1]
        image = read_image(path)
        try:
            inputs = self.image_processor(images=[image], return_tensors="pt")
        except ValueError as err:  # e.g. an aspect ratio the processor cannot resize
            raise DataError(f"the image processor rejects this image ({image.size[0]} x "
                            f"{image.size[1]} pixels): {err}", path=path,
                            reason="unreadable image") from err
        entry = (inputs["pixel_values"], inputs["image_grid_thw"])
        self._counts[path] = (version, int(entry[1].prod()) // self.merge**2)
        self._pixels[path] = (version, entry)
        self._pixels.move_to_end(path)
        if len(self._pixels) > self._cache_size:
            self._pixels.popitem(last=False)
        return entry


Version = tuple[int, ...]

# A file changed within this long of being looked at may change again within the same tick of
# its file system's clock (ext4: a few ms; FAT, HFS+ and many NFS servers: 1-2 s) and keep
# every stat field: its version is then never equal to another, so it is read again ("racy
# git"). Files older than that (a dataset's pictures) are cached as usual.
RACY_NS = 2_000_000_000
_racy = itertools.count()


def image_version(path: str | None) -> Version | None:
    """What a cache of anything read from the file at ``path`` is kept with: (modification and
    status-change times in ns, size, inode). One ``stat``, about a microsecond: cheap next to the
    tokeniser for every document. A rewrite in place changes the times or the size, a
    replacement by a rename the inode, and a copy that keeps the old modification time (``cp
    -p``, ``rsync -t``, ``os.utime``) the status-change time, which no user can set. A rewrite
    of the same size within one tick of the file system's clock keeps all four: so a file
    changed less than :data:`RACY_NS` ago gets a version of its own on every call, equal to no
    other, and is read again until it is that old (a service writing each upload to one path
    scores every upload, at the cost of reading it). None for no image."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError as err:
        raise DataError(f"cannot read the image: {err.strerror}", path=path, reason="unreadable image") from err
    version = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_NS:
        return (*version, next(_racy))
    return version


# path -> (its image_version, why it cannot be read or None): a picture named by several lines
# (M-BEIR's query images, emoji's pictures in two tasks) or splits is opened once per process;
# bounded, since a pool of millions of pictures would otherwise hold them all
_CHECKED: dict[str, tuple[Version | None, str | None]] = {}
_CHECKED_MAX = 1 << 18


def picture_problem(path: str) -> str | None:
    """Why the picture at ``path`` cannot be read, or None: PIL opens its header and runs
    ``verify()`` (PNG: every chunk's checksum; other formats: the header only), without decoding
    the pixels, so a loader can check every picture in its first seconds rather than a batch
    finding a corrupt one hours into training. A picture whose header is sound but whose data is
    cut short (a truncated JPEG) passes, and :func:`read_image` names it when it is read. Cached
    per :func:`image_version`: a file rewritten at its path is checked again."""
    version = image_version(path)
    cached = _CHECKED.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    from PIL import Image

    problem = None
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # noqa: BLE001 -- PIL's verify raises SyntaxError, struct.error, OSError...
        problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[path] = (version, problem)
    return problem


def read_image(path: str | Path):
    """The image at ``path`` as 8-bit RGB, as the backbone's own pipeline shows it: transparency
    composited onto white (transformers' ``convert_to_rgb``; a bare ``convert("RGB")`` shows a
    transparent background as the black under it) and 16-/32-bit pixels scaled down to 8 bits
    (``convert`` clips them: a 16-bit gradient came out 98% white), and turned upright by its
    EXIF orientation as transformers' ``load_image`` does (a phone's portrait photo is stored
    sideways: read as stored, it was scored sideways, with its width and height swapped). A
    :class:`DataError` naming the file if it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = _eight_bit(ImageOps.exif_transpose(image))
            if "A" in image.getbands() or image.info.get("transparency") is not None:
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read the image: {err}", path=path, reason="unreadable image") from err


# Single-channel modes deeper than 8 bits, with the value that means white: 16-bit PNGs open as
# "I;16" (older Pillows: "I"); float TIFFs ("F") hold 0..1. A picture whose values exceed that
# (a 32-bit TIFF using its whole range) is scaled by its own maximum instead of clipped.
_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def _eight_bit(image):
    """``image`` itself, or its deep single-channel pixels scaled onto 0..255 (mode "L")."""
    import numpy as np
    from PIL import Image

    if image.mode not in _FULL_SCALE:
        return image
    values = np.asarray(image, dtype=np.float64)
    full = max(_FULL_SCALE[image.mode], float(values.max(initial=0)))
    return Image.fromarray(np.round(np.clip(values, 0, full) * (255 / full)).astype(np.uint8))
