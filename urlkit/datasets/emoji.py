"""The emoji benchmark: text-to-image (T2I) and image-to-text (I2T) retrieval on real pictures.

Every emoji that the Noto Color Emoji font draws as one glyph becomes a small picture
(``IMAGE_SIZE`` x ``IMAGE_SIZE`` PNG on white) paired with its English name from the
``emoji`` package ("grinning face", "Kenya", "red heart"). Two tasks share the pictures:

* **T2I** (``t2i/``): query = the name, documents = pictures.
* **I2T** (``i2t/``): query = the picture, documents = names.

Unicode's ``emoji-test.txt`` (Debian package ``unicode-data``) supplies the emoji list and
its group / subgroup hierarchy. Kept: fully-qualified emoji outside the "Component" group,
without skin-tone modifiers (U+1F3FB..U+1F3FF), so the ~1,800 skin-tone variants collapse
onto their base emoji. Dropped: sequences the font does not shape into one glyph.

Splits are *by emoji* and closed: ``sha256(id) mod 10`` -> 0-7 train, 8 dev, 9 test, and
a query's positive, negatives and candidate pool all come from its own split, so no test
picture or name is ever seen in training. Neighbours are ranked by (same subgroup first,
distance in Unicode's order), since emoji-test.txt lists look-alikes next to each other:

* ``negatives`` (hard): the query's split-mates of the same subgroup, nearest first, at
  most ``POOL_SIZE - 1`` ("grinning face" -> "grinning face with big eyes", ...);
* ``candidates`` (the pool that is reranked, and where random negatives are drawn from):
  the positive plus its ``POOL_SIZE - 1`` nearest split-mates of the same group, sorted by
  id so that no position gives the answer away.

    python -m urlkit.datasets.emoji --out data/emoji
"""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from urlkit.datasets.build import BuiltDataset, DatasetBuildError, build_date, write_dataset
from urlkit.datasets.debian import package_versions

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEBIAN_PACKAGES = ["unicode-data", "fonts-noto-color-emoji"]

IMAGE_SIZE = 56  # a multiple of 28 (Qwen2.5-VL: 14-pixel patches, 2x2 merge) -> 4 image tokens
POOL_SIZE = 25  # positive + 24 candidates: the paper reranks the top-25
NOTO_BITMAP_SIZE = 109  # the only size of the font's colour bitmaps (CBDT strike)
SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)
SPLIT_OF_BUCKET = {**dict.fromkeys(range(8), "train"), 8: "dev", 9: "test"}

T2I_INSTRUCTION = "Retrieve the emoji picture that matches the given name."
I2T_INSTRUCTION = "Retrieve the name of the emoji shown in the picture."


@dataclass(frozen=True)
class Emoji:
    """One emoji of ``emoji-test.txt``: ``id`` is its code points in hex, joined by "-"."""

    id: str
    char: str
    name: str
    group: str
    subgroup: str
    order: int  # position in emoji-test.txt: neighbours in this order look alike

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha256(self.id.encode()).hexdigest(), 16) % 10
        return SPLIT_OF_BUCKET[bucket]

    @property
    def image(self) -> str:
        return f"images/{self.id}.png"


def read_emoji_test(path: Path = EMOJI_TEST) -> Iterator[tuple[str, str, str, int]]:
    """``(char, group, subgroup, line)`` for every kept line of Unicode's emoji-test.txt."""
    if not path.is_file():
        raise DatasetBuildError(
            "Unicode's emoji-test.txt not found; install it with `apt-get install -y unicode-data`",
            path=path,
        )
    group = subgroup = ""
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif line.strip() and not line.startswith("#"):
                fields, _, status = line.partition(";")
                try:
                    code_points = [int(c, 16) for c in fields.split()]
                except ValueError as err:
                    raise DatasetBuildError(f"bad code points {fields.strip()!r}",
                                            path=path, line=line_no) from err
                if status.split("#", 1)[0].strip() != "fully-qualified" or group == "Component":
                    continue
                if any(c in SKIN_TONES for c in code_points):
                    continue  # a skin-tone variant of an emoji that is kept without it
                yield "".join(map(chr, code_points)), group, subgroup, line_no


def english_name(char: str) -> str | None:
    """The ``emoji`` package's English name, ":red_heart:" -> "red heart" (None if unknown)."""
    import emoji

    data = emoji.EMOJI_DATA.get(char)
    return data["en"].strip(":").replace("_", " ") if data else None


class EmojiRenderer:
    """Draws one emoji with Noto Color Emoji; ``None`` when the font has no single glyph."""

    def __init__(self, font_path: Path = NOTO_FONT, size: int = IMAGE_SIZE):
        from PIL import ImageFont, features

        if not font_path.is_file():
            raise DatasetBuildError("Noto Color Emoji not found; install it with "
                                    "`apt-get install -y fonts-noto-color-emoji`", path=font_path)
        if not features.check("raqm"):
            raise DatasetBuildError("Pillow has no libraqm: emoji sequences (ZWJ, flags, "
                                    "keycaps) cannot be shaped; `apt-get install -y libraqm0`")
        self.font = ImageFont.truetype(str(font_path), NOTO_BITMAP_SIZE,
                                       layout_engine=ImageFont.Layout.RAQM)
        self.glyph_width = self.font.getlength("\U0001F600")
        self.size = size

    def render(self, char: str):
        from PIL import Image, ImageDraw

        # A sequence the font cannot ligate is shaped as several glyphs side by side.
        if self.font.getlength(char) > 1.5 * self.glyph_width:
            return None
        canvas = Image.new("RGBA", (2 * int(self.glyph_width), 2 * NOTO_BITMAP_SIZE))
        ImageDraw.Draw(canvas).text((0, 0), char, font=self.font, embedded_color=True)
        box = canvas.getbbox()
        if box is None:  # an empty glyph
            return None
        glyph = canvas.crop(box)
        side = max(glyph.size)
        square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
        small = square.convert("RGB").resize((self.size, self.size), Image.Resampling.LANCZOS)
        # 256 colours are plenty for 56 x 56 pixels and halve the size of the committed data.
        return small.quantize(256, method=Image.Quantize.FASTOCTREE)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def collect_emoji(renderer: EmojiRenderer, path: Path = EMOJI_TEST):
    """The kept emoji, their PNG bytes, and counts of what was dropped and why."""
    kept: list[Emoji] = []
    pictures: dict[str, bytes] = {}
    dropped = {"not drawn by the font": 0, "no name in the emoji package": 0}
    for order, (char, group, subgroup, _line) in enumerate(read_emoji_test(path)):
        name = english_name(char)
        if name is None:
            dropped["no name in the emoji package"] += 1
            continue
        picture = renderer.render(char)
        if picture is None:
            dropped["not drawn by the font"] += 1
            continue
        item = Emoji("-".join(f"{ord(c):x}" for c in char), char, name, group, subgroup, order)
        kept.append(item)
        pictures[item.id] = png_bytes(picture)
    return kept, pictures, dropped


def neighbours(query: Emoji, same_split: list[Emoji], k: int = POOL_SIZE - 1) -> list[Emoji]:
    """The ``k`` emoji of the query's group nearest to it: same subgroup first, then by
    distance in Unicode's order (ties: the earlier one)."""

    def rank(other: Emoji) -> tuple[bool, int, int]:
        return (other.subgroup != query.subgroup, abs(other.order - query.order), other.order)

    pool = [e for e in same_split if e.group == query.group and e.id != query.id]
    return sorted(pool, key=rank)[:k]


def build_tasks(items: list[Emoji], provenance: dict) -> tuple[BuiltDataset, BuiltDataset]:
    """The T2I and I2T datasets over the same emoji, splits and candidate pools."""
    by_split: dict[str, list[Emoji]] = {"train": [], "dev": [], "test": []}
    for item in items:
        by_split[item.split].append(item)
    image = {e.id: f"../{e.image}" for e in items}  # relative to the task folder
    t2i = BuiltDataset("emoji_t2i", "T2I", T2I_INSTRUCTION,
                       corpus=[{"id": e.id, "image": image[e.id]} for e in items],
                       splits={}, provenance=provenance)
    i2t = BuiltDataset("emoji_i2t", "I2T", I2T_INSTRUCTION,
                       corpus=[{"id": e.id, "text": e.name} for e in items],
                       splits={}, provenance=provenance)
    for split, members in by_split.items():
        t2i.splits[split], i2t.splits[split] = [], []
        for query in members:
            nearest = neighbours(query, members)
            judged = {"positives": [query.id],
                      "negatives": [e.id for e in nearest if e.subgroup == query.subgroup],
                      "candidates": sorted([query.id, *(e.id for e in nearest)])}
            t2i.splits[split].append({"id": query.id, "text": query.name, **judged})
            i2t.splits[split].append({"id": query.id, "image": image[query.id], **judged})
    for dataset in (t2i, i2t):
        dataset.stats = {split: len(queries) for split, queries in dataset.splits.items()}
    return t2i, i2t


def build(out: str | Path) -> dict:
    """Render the pictures into ``out/images`` and write ``out/t2i`` and ``out/i2t``."""
    import emoji
    import PIL

    out = Path(out)
    versions = package_versions(DEBIAN_PACKAGES)
    renderer = EmojiRenderer()
    items, pictures, dropped = collect_emoji(renderer)
    provenance = {
        "emoji list and groups": f"{EMOJI_TEST} (Debian unicode-data {versions['unicode-data']}; "
                                 "Unicode Data Files licence)",
        "pictures": f"Noto Color Emoji, Debian fonts-noto-color-emoji "
                    f"{versions['fonts-noto-color-emoji']} (SIL Open Font License 1.1), "
                    f"rendered with Pillow {PIL.__version__} at {IMAGE_SIZE}x{IMAGE_SIZE}",
        "names": f"emoji package {emoji.__version__} (BSD licence)",
        "kept": len(items),
        "dropped": dropped,
        "built": build_date(),
    }
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.glob("*.png"):
        if stale.stem not in pictures:
            stale.unlink()
    for emoji_id, data in pictures.items():
        target = images / f"{emoji_id}.png"
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    t2i, i2t = build_tasks(items, provenance)
    write_dataset(t2i, out / "t2i")
    write_dataset(i2t, out / "i2t")
    return {"kept": len(items), "dropped": dropped, "queries": t2i.stats,
            "mean candidates": {s: round(v["mean_candidates"], 2)
                                for s, v in t2i.summary().items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m urlkit.datasets.emoji", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/emoji", help="output folder (default data/emoji)")
    args = parser.parse_args(argv)
    try:
        summary = build(args.out)
    except DatasetBuildError as err:
        raise SystemExit(f"error: {err}") from err
    print(f"wrote {args.out}: {summary}")


if __name__ == "__main__":
    main()
