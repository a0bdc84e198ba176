"""Picture checks at load time at scale: ``data.check_pictures`` (verify | exists) and the checks
run on threads ahead of the reader, with the errors and skips of checking one by one."""

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
