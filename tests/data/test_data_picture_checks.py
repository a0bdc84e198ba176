"""Picture checks at load time at scale: ``data.check_pictures`` (verify | exists), the checks
run on threads ahead of the reader, with the errors and skips of checking one by one, and each
DDP rank's share of the pictures to verify."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from helpers.data_builders import jsonl_dataset, mbeir_tree, write_image, write_jsonl
from omegaconf import OmegaConf

from urlkit.data import DataError, load_split
from urlkit.errors import ConfigError

DATA_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "data" / "wordsense.yaml"


def _damaged_png(path):
    """A PNG with one byte of its pixel data flipped: its header opens, its checksum fails."""
    data = bytearray(write_image(path).read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _picture_dataset(root, n_docs, corrupt=(), missing=()):
    """``n_docs`` documents d0.. each with its own picture (``corrupt``: damaged, ``missing``:
    never written), and one query per document that also names the next document."""
    corpus, train = [], []
    for i in range(n_docs):
        picture = root / "images" / f"d{i}.png"
        if i in corrupt:
            _damaged_png(picture)
        elif i not in missing:
            write_image(picture)
        corpus.append({"id": f"d{i}", "text": f"document {i}", "image": f"images/d{i}.png"})
        train.append({"id": f"q{i}", "text": f"query {i}", "positives": [f"d{i}", f"d{(i + 1) % n_docs}"]})
    return jsonl_dataset(root, corpus=corpus, train=train)


@pytest.mark.timeout(60)
def test_an_unknown_check_pictures_value_is_an_error_naming_the_key(tmp_path):
    from urlkit.config_checks import check_train_config

    jsonl_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"check_pictures.*'verify', 'exists'.*'verfy'"):
        load_split(tmp_path, "train", check_pictures="verfy")
    data = OmegaConf.load(DATA_CONFIG)
    assert data.check_pictures == "verify"  # the default keeps the guarantee
    data.check_pictures = "verfy"
    with pytest.raises(ConfigError, match=r"data\.check_pictures='verfy' is not one of verify, exists"):
        check_train_config(OmegaConf.create({"data": data}))


@pytest.mark.timeout(60)
def test_exists_looks_for_the_file_and_never_opens_it(tmp_path, monkeypatch):
    from urlkit.build import load_data_split
    from urlkit.data import picture_checks

    _picture_dataset(tmp_path, 4, corrupt={2})
    with pytest.raises(DataError, match=r"unreadable image images/d2\.png"):
        load_split(tmp_path, "train")  # the default: opened and verified

    def no_open(path):
        raise AssertionError(f"check_pictures=exists opened {path}")

    monkeypatch.setattr(picture_checks, "picture_problem", no_open)
    data = OmegaConf.merge(OmegaConf.load(DATA_CONFIG),
                           {"path": str(tmp_path), "check_pictures": "exists"})
    split = load_data_split(data, "train")  # the knob travels from the data config to the loader
    assert split.corpus["d2"].image == str((tmp_path / "images" / "d2.png").resolve()) and not split.skipped
    (tmp_path / "images" / "d3.png").unlink()
    with pytest.raises(DataError, match=r"image file not found: images/d3\.png") as err:
        load_split(tmp_path, "train", check_pictures="exists")  # a missing picture is still an error
    assert str(err.value).startswith(f"{tmp_path / 'corpus.jsonl'}:4: ")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("window", [None, 5])
def test_pictures_are_checked_concurrently_with_the_errors_and_skips_of_one_by_one(tmp_path, monkeypatch, window):
    """Each open waits a little (a network file system's latency, earlier lines longer, so the
    checks end out of line order): several run at once, and the first error, the skipped lines
    and their counts are those of reading line by line."""
    from PIL import Image

    from urlkit.data.reading import ErrorPolicy

    if window is not None:  # lines handed out through a window smaller than the file
        from urlkit.data import picture_checks

        monkeypatch.setattr(picture_checks, "WINDOW", window)
    n_docs, corrupt, missing = 48, {5, 17, 18, 40}, {9, 33}
    _picture_dataset(tmp_path, n_docs, corrupt=corrupt, missing=missing)
    waits = random.Random(0)
    lock, running, most = threading.Lock(), [0], [0]
    real_open = Image.open

    def slow_open(path, *args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            wait = 0.002 + 0.01 * waits.random()
        time.sleep(wait)
        with lock:
            running[0] -= 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", slow_open)
    with pytest.raises(DataError, match=r"unreadable image images/d5\.png") as err:
        load_split(tmp_path, "train")
    assert str(err.value).startswith(f"{tmp_path / 'corpus.jsonl'}:6: ")
    assert most[0] > 1, "the pictures were opened one at a time"

    handled = []
    real_handle = ErrorPolicy.handle
    monkeypatch.setattr(ErrorPolicy, "handle", lambda self, error: handled.append(
        (Path(error.path).name, error.line, error.reason)) or real_handle(self, error))
    split = load_split(tmp_path, "train", on_error="skip")
    bad = sorted(corrupt | missing)
    assert handled[:len(bad)] == [("corpus.jsonl", i + 1, "unreadable image" if i in corrupt else "missing image")
                                  for i in bad]  # file order, whatever order the checks ended in
    assert set(split.corpus) == {f"d{i}" for i in range(n_docs)} - {f"d{i}" for i in bad}
    assert split.skipped["unreadable image"] == len(corrupt) and split.skipped["missing image"] == len(missing)
    # q17 names d17 and d18, both skipped; every other query keeps a positive
    assert split.skipped["positive's document skipped"] == 1 and len(split.queries) == n_docs - 1


@pytest.mark.timeout(60)
def test_training_on_one_dataset_checks_no_picture_of_the_union_pools_other_datasets(tmp_path, monkeypatch):
    """M-BEIR's union training pool holds every dataset's candidates (5.6M); training one
    dataset keeps its own, and the checks ahead of the reader look at no other picture."""
    from PIL import Image

    root = mbeir_tree(tmp_path)
    pool = root / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl"
    others = [{"did": f"9:{100 + i}", "txt": None, "img_path": f"mbeir_images/other/o{i}.png", "modality": "image"}
              for i in range(20)]
    for other in others:
        write_image(root / other["img_path"])
    write_jsonl(pool, [json.loads(line) for line in pool.read_text().splitlines()] + others)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **kw: opened.append(str(path)) or real_open(path, *a, **kw))
    train = load_split(root, "train", dataset="toy_task7")
    assert not any(did.startswith("9:") for did in train.corpus)
    assert opened and not [path for path in opened if "/other/" in path]


def _faked_torchrun_rank(monkeypatch, rank: int, world: int):
    """This process as torchrun's rank ``rank`` of ``world`` on one node, before any process
    group: the share of the pictures the training run gives it (urlkit.train)."""
    from urlkit.data.picture_checks import PictureShare
    from urlkit.training.distributed import launch_layout

    for name, value in {"RANK": rank, "LOCAL_RANK": rank, "GROUP_RANK": 0, "LOCAL_WORLD_SIZE": world,
                        "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29500}.items():
        monkeypatch.setenv(name, str(value))
    layout = launch_layout({"accelerator": "cpu", "devices": world, "strategy": "ddp"})
    assert layout == (rank, world)
    return PictureShare(*layout)


def _opened_by_load(monkeypatch, root, **options):
    """The pictures ``load_split`` opened to verify, and the split it loaded."""
    from urlkit.data import picture_checks

    opened, real = [], picture_checks.picture_problem
    monkeypatch.setattr(picture_checks, "picture_problem", lambda path: opened.append(path) or real(path))
    split = load_split(root, "train", **options)
    monkeypatch.setattr(picture_checks, "picture_problem", real)
    return opened, split


@pytest.mark.timeout(120)
def test_under_ddp_each_rank_verifies_a_disjoint_share_and_together_every_picture(tmp_path, monkeypatch):
    """M-BEIR's 1.5M pictures on 8 ranks of a node were opened 8 times each: every rank loads
    before the ranks connect. Each rank now verifies its own share (and looks for the others'
    files); the ranks load the same split, and a one-process load still verifies every one."""
    n_docs = 40
    root = _picture_dataset(tmp_path / "data", n_docs)
    pictures = {str((root / "images" / f"d{i}.png").resolve()) for i in range(n_docs)}
    alone, whole = _opened_by_load(monkeypatch, root)
    assert sorted(alone) == sorted(pictures)  # one process: every picture, once
    shares, splits = [], []
    for rank in (0, 1):
        share = _faked_torchrun_rank(monkeypatch, rank, 2)
        opened, split = _opened_by_load(monkeypatch, root, picture_share=share)
        assert len(opened) == len(set(opened)) and opened, f"rank {rank} opened {opened}"
        shares.append(set(opened))
        splits.append(split)
    assert not shares[0] & shares[1] and shares[0] | shares[1] == pictures
    for split in splits:
        assert {d: doc.image for d, doc in split.corpus.items()} == {d: doc.image for d, doc in whole.corpus.items()}
        assert [q.id for q in split.queries] == [q.id for q in whole.queries]
    # on_error=skip: every rank must skip the same lines, so each one verifies every picture
    skipping, _ = _opened_by_load(monkeypatch, root, picture_share=share, on_error="skip")  # rank 1's
    assert sorted(skipping) == sorted(pictures)


@pytest.mark.timeout(120)
def test_a_corrupt_picture_stops_the_rank_whose_share_it_is_naming_its_line(tmp_path):
    from urlkit.data.picture_checks import PictureShare

    n_docs = 16
    ranks = [PictureShare(0, 2), PictureShare(1, 2)]
    corrupt = next(i for i in range(n_docs) if ranks[1].verifies(f"images/d{i}.png"))
    missing = next(i for i in range(n_docs) if ranks[1].verifies(f"images/d{i}.png") and i != corrupt)
    root = _picture_dataset(tmp_path, n_docs, corrupt={corrupt})
    assert load_split(root, "train", picture_share=ranks[0]).corpus[f"d{corrupt}"].image  # not rank 0's to open
    for share in (ranks[1], None):
        with pytest.raises(DataError, match=rf"unreadable image images/d{corrupt}\.png") as err:
            load_split(root, "train", picture_share=share)
        assert str(err.value).startswith(f"{root / 'corpus.jsonl'}:{corrupt + 1}: ")
    # a missing picture is looked for by every rank: rank 0 stops at it too
    (root / "images" / f"d{missing}.png").unlink()
    with pytest.raises(DataError, match=rf"image file not found: images/d{missing}\.png"):
        load_split(root, "train", picture_share=ranks[0])
