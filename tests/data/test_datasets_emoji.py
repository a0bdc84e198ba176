"""The committed emoji benchmark (data/emoji) and its builder."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from urlkit.data.loaders import load_split
from urlkit.datasets import emoji as builder
from urlkit.paths import REPO_ROOT

DATA = REPO_ROOT / "data" / "emoji"
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def splits():
    return {(task, split): load_split(DATA / task, split) for task in ("t2i", "i2t") for split in SPLITS}


def test_both_tasks_load_with_their_category_and_modalities(splits):
    for split in SPLITS:
        t2i, i2t = splits["t2i", split], splits["i2t", split]
        assert (t2i.category, i2t.category) == ("T2I", "I2T")
        assert not t2i.skipped and not i2t.skipped
        query, doc = t2i.queries[0], t2i.corpus[t2i.queries[0].positives[0]]
        assert (query.modality, doc.modality) == ("T", "I")
        query, doc = i2t.queries[0], i2t.corpus[i2t.queries[0].positives[0]]
        assert (query.modality, doc.modality) == ("I", "T")


def test_the_two_tasks_pair_the_same_name_with_the_same_picture(splits):
    t2i, i2t = splits["t2i", "test"], splits["i2t", "test"]
    names = {q.id: q.text for q in t2i.queries}
    pictures = {q.id: q.image for q in i2t.queries}
    assert names.keys() == pictures.keys()
    for emoji_id, name in names.items():
        assert i2t.corpus[emoji_id].text == name
        assert t2i.corpus[emoji_id].image == pictures[emoji_id]
        assert Path(pictures[emoji_id]).name == f"{emoji_id}.png"


def test_splits_are_disjoint_and_closed_by_emoji(splits):
    members = {split: {q.id for q in splits["t2i", split].queries} for split in SPLITS}
    assert sum(map(len, members.values())) == len(splits["t2i", "train"].corpus) == 1870
    assert not (members["train"] & members["dev"] or members["train"] & members["test"]
                or members["dev"] & members["test"])
    for split in SPLITS:
        for query in splits["t2i", split].queries:
            assert query.positives == [query.id]
            assert set(query.candidates) <= members[split]  # nothing from another split
            assert set(query.negatives) <= set(query.candidates) - {query.id}
            assert query.id in query.candidates and len(query.candidates) <= builder.POOL_SIZE


def test_every_picture_exists_and_decodes_as_a_56_pixel_square(splits):
    corpus = splits["t2i", "train"].corpus
    paths = {doc.image for doc in corpus.values()}
    assert len(paths) == len(corpus)
    assert sorted(Path(p).name for p in paths) == sorted(p.name for p in (DATA / "images").glob("*.png"))
    for path in paths:
        with Image.open(path) as image:
            image.load()
            assert image.size == (builder.IMAGE_SIZE, builder.IMAGE_SIZE)
            colours = image.convert("RGB").getcolors(maxcolors=4096)
            assert colours is None or len(colours) > 4  # a drawing, not a blank square


def test_committed_data_stays_compact():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 4_000_000


def test_emoji_test_parser_keeps_fully_qualified_emoji_without_skin_tones(tmp_path):
    source = tmp_path / "emoji-test.txt"
    source.write_text(
        "# group: Smileys & Emotion\n# subgroup: face-smiling\n"
        "1F600 ; fully-qualified # 😀 E1.0 grinning face\n"
        "263A FE0F ; fully-qualified # ☺️ E0.6 smiling face\n"
        "263A ; unqualified # ☺ E0.6 smiling face\n"
        "# group: People & Body\n# subgroup: hand-fingers-open\n"
        "1F44B ; fully-qualified # 👋 E0.6 waving hand\n"
        "1F44B 1F3FB ; fully-qualified # 👋🏻 E1.0 waving hand: light skin tone\n"
        "# group: Component\n# subgroup: hair-style\n"
        "1F9B0 ; component # 🦰 E11.0 red hair\n",
        encoding="utf-8",
    )
    kept = list(builder.read_emoji_test(source))
    assert [(c, g, s) for c, g, s, _ in kept] == [
        ("\U0001F600", "Smileys & Emotion", "face-smiling"),
        ("\u263A\uFE0F", "Smileys & Emotion", "face-smiling"),
        ("\U0001F44B", "People & Body", "hand-fingers-open"),
    ]
    source.write_text("# group: X\n# subgroup: y\nZZZZ ; fully-qualified # ? bad\n", encoding="utf-8")
    with pytest.raises(builder.DatasetBuildError, match=r"emoji-test\.txt:3: bad code points"):
        list(builder.read_emoji_test(source))


def test_neighbours_prefer_the_subgroup_then_the_nearest_in_unicode_order():
    def item(order, subgroup, group="g"):
        return builder.Emoji(f"e{order}", "?", f"n{order}", group, subgroup, order)

    query = item(10, "a")
    pool = [query, item(1, "a"), item(12, "a"), item(11, "b"), item(9, "b"), item(30, "a", "other")]
    assert [e.id for e in builder.neighbours(query, pool, k=3)] == ["e12", "e1", "e9"]


def test_split_is_a_pure_function_of_the_emoji_id():
    emoji = builder.Emoji("1f600", "\U0001F600", "grinning face", "g", "s", 0)
    bucket = int(hashlib.sha256(b"1f600").hexdigest(), 16) % 10
    assert emoji.split == builder.SPLIT_OF_BUCKET[bucket]


def test_english_name_comes_from_the_emoji_package():
    assert builder.english_name("\u2764\uFE0F") == "red heart"
    assert builder.english_name("not an emoji") is None


needs_sources = pytest.mark.skipif(
    not (builder.NOTO_FONT.is_file() and builder.EMOJI_TEST.is_file()),
    reason="apt-get install -y fonts-noto-color-emoji unicode-data to rebuild the emoji data",
)


@needs_sources
def test_renderer_draws_one_glyph_and_refuses_a_sequence_the_font_cannot_ligate():
    renderer = builder.EmojiRenderer()
    picture = renderer.render("\U0001F600")
    assert picture.size == (56, 56) and picture.convert("RGB").getbbox() is not None
    assert renderer.render("\U0001FAE8\u200d\U0001F600") is None  # shaking face + ZWJ + grin


@needs_sources
def test_rebuild_is_byte_identical_to_the_committed_data(tmp_path):
    import PIL

    provenance = json.loads((DATA / "t2i" / "dataset.json").read_text())["provenance"]
    versions = builder.package_versions(builder.DEBIAN_PACKAGES)
    if not all(v in json.dumps(provenance) for v in [*versions.values(), PIL.__version__]):
        pytest.skip(f"installed versions {versions}, Pillow {PIL.__version__} differ from the "
                    "committed data's provenance")
    builder.build(tmp_path)
    for task in ("t2i", "i2t"):
        for name in ("corpus", *SPLITS):
            built = gzip.open(tmp_path / task / f"{name}.jsonl.gz").read()
            assert built == gzip.open(DATA / task / f"{name}.jsonl.gz").read(), (task, name)
    built_images = sorted((tmp_path / "images").glob("*.png"))
    assert [p.name for p in built_images] == sorted(p.name for p in (DATA / "images").glob("*.png"))
    for path in built_images[::50]:
        assert path.read_bytes() == (DATA / "images" / path.name).read_bytes(), path.name
