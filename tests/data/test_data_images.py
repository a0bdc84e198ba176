"""Pictures as the model sees them: ``read_image``'s modes, pictures built in the test."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw
from transformers.image_transforms import convert_to_rgb

from urlkit.data.images import read_image


def _red_disc(mode: str) -> Image.Image:
    """A red (or grey) disc on a fully transparent background whose hidden colour is black."""
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, 24, 24), fill=(255, 0, 0, 255))
    return image if mode == "RGBA" else image.convert(mode)


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    ImageDraw.Draw(image).ellipse((8, 8, 24, 24), fill=1)
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize("build", [lambda: _red_disc("RGBA"), lambda: _red_disc("LA"),
                                   _palette_with_transparency], ids=["RGBA", "LA", "P+transparency"])
def test_transparency_is_composited_onto_white_as_transformers_does(tmp_path, build):
    path = tmp_path / "disc.png"
    build().save(path)
    ours = np.array(read_image(path))
    assert ours[0, 0].tolist() == [255, 255, 255]  # convert("RGB") gave the black under it
    with Image.open(path) as opened:
        np.testing.assert_array_equal(ours, convert_to_rgb(opened, return_numpy=True))


def test_a_16_bit_picture_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 64), (8, 1)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gradient).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    rgb = np.array(read_image(path))
    expected = np.round(gradient / 257).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)  # clipped: 98% white, 2 values
    assert rgb[..., 0].tolist() == rgb[..., 2].tolist() and len(np.unique(rgb)) == 64


@pytest.mark.parametrize(("values", "white"), [
    (np.linspace(0, 1, 16, dtype=np.float32), 1.0),  # a float picture holds 0..1
    (np.linspace(0, 65535, 16).astype(np.int32), 65535),  # "I": a 16-bit PNG in older Pillows
    (np.linspace(0, 2**20, 16).astype(np.int32), 2**20),  # over 16 bits: its own maximum is white
])
def test_deep_single_channel_modes_are_scaled_by_their_full_scale(tmp_path, values, white):
    path = tmp_path / "deep.tiff"
    Image.fromarray(np.tile(values, (4, 1))).save(path)
    grey = np.array(read_image(path))[0, :, 0]
    np.testing.assert_array_equal(grey, np.round(values.astype(np.float64) * 255 / white).astype(np.uint8))


def test_an_exif_rotated_photo_is_read_upright_as_transformers_does(tmp_path):
    from transformers.image_utils import load_image

    # stored 40 wide x 20 high, red left half and blue right; orientation 6: shown turned 90 degrees clockwise
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    ImageDraw.Draw(stored).rectangle((20, 0, 39, 19), fill=(0, 0, 255))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "portrait photo.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)

    image = read_image(path)
    assert image.size == (20, 40)
    pixels = np.asarray(image).astype(int)
    assert pixels[5, 10, 0] > 200 and pixels[5, 10, 2] < 60  # the red half is on top once upright
    assert pixels[35, 10, 2] > 200 and pixels[35, 10, 0] < 60
    assert np.abs(pixels - np.asarray(load_image(str(path))).astype(int)).max() <= 1


def _same_size_rewrite(path, stat):
    """Other bytes of the same length at ``path``, its modification time put back as it was: a
    rewrite within one tick of the file system's clock, or a copy that keeps the time (cp -p)."""
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_ino == stat.st_ino


def test_a_same_size_rewrite_within_one_clock_tick_is_read_again(tmp_path):
    from urlkit.data.images import image_version, picture_problem

    path = tmp_path / "upload.png"
    Image.new("RGB", (8, 8), "red").save(path)
    before = image_version(str(path))
    assert picture_problem(str(path)) is None
    _same_size_rewrite(path, os.stat(path))
    assert image_version(str(path)) != before
    assert picture_problem(str(path)) is not None  # not the cached answer for the first picture


@pytest.mark.timeout(30)
def test_an_old_pictures_version_is_stable_and_a_copy_keeping_its_time_changes_it(tmp_path, monkeypatch):
    from urlkit.data import images

    monkeypatch.setattr(images, "RACY_NS", 0, raising=False)  # as if written long ago: only the stat fields decide
    path = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), "red").save(path)
    stat = os.stat(path)
    before = images.image_version(str(path))
    assert images.image_version(str(path)) == before  # what lets the caches work at all
    probe, deadline = tmp_path / "probe", time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for the file system's clock to tick
        probe.write_bytes(b"x")
        if os.stat(probe).st_ctime_ns > stat.st_ctime_ns:
            break
        time.sleep(0.01)
    _same_size_rewrite(path, stat)
    assert images.image_version(str(path)) != before  # the status-change time, which utime cannot set
