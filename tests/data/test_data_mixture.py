"""Training mixtures: several sources, sampled by weight, deterministic and resumable, logged per source."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from helpers.data_builders import jsonl_dataset
from helpers.run_helpers import compose_train, write_small_dataset
from omegaconf import OmegaConf

from urlkit.build import mixture_configs
from urlkit.data import load_split
from urlkit.data.groups import TrainGroups
from urlkit.data.mixture import MixtureStream, Source, block_counts
from urlkit.data.stream import GroupStream
from urlkit.errors import ConfigError


def test_block_counts_are_the_weights_shares():
    assert block_counts([1, 1], 10) == [5, 5] and block_counts([1, 1, 1], 10) == [4, 3, 3]
    assert block_counts([3, 1], 1000) == [750, 250] and sum(block_counts([0.2, 0.7, 0.1], 7)) == 7
    with pytest.raises(ValueError, match="too small"):
        block_counts([1000, 1], 10)
    with pytest.raises(ValueError, match="positive sum"):
        block_counts([0, 0], 10)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    small = load_split(write_small_dataset(root / "small"), "train")  # 12 queries
    animals = load_split(jsonl_dataset(root / "animals"), "train")  # 3 queries
    return [Source("small", TrainGroups(small, None, 2, seed=0)),
            Source("animals", TrainGroups(animals, None, 2, seed=0), weight=1.0)]


def _key(item):
    return item["source"], item["query_id"], tuple(item["doc_ids"])


def test_balanced_by_default_whatever_the_sizes(sources):
    stream = MixtureStream(sources, seed=3, block=10)
    items = list(itertools.islice(iter(stream), 40))
    assert Counter(item["source"] for item in items) == {"small": 20, "animals": 20}
    assert stream.items_per_source(40) == {"small": 20, "animals": 20}
    assert stream.items_per_source(13) == dict(Counter(item["source"] for item in items[:13]))
    weighted = MixtureStream([sources[0], Source("animals", sources[1].groups, weight=3.0)], block=8)
    drawn = Counter(item["source"] for item in itertools.islice(iter(weighted), 32))
    assert drawn == {"small": 8, "animals": 24}


def test_each_source_follows_its_own_stream(sources):
    """The k-th item of a source is item k of that source's GroupStream (epochs, negatives)."""
    stream = MixtureStream(sources, seed=5, block=10)
    by_source = {"small": [], "animals": []}
    for item in itertools.islice(iter(stream), 50):
        by_source[item.pop("source")].append(item)
    for source in sources:
        own = GroupStream(source.groups, seed=5)
        expected = [own.item(k) for k in range(len(by_source[source.name]))]
        assert [(e["query_id"], e["doc_ids"]) for e in expected] == [
            (i["query_id"], i["doc_ids"]) for i in by_source[source.name]
        ]
    assert len(by_source["animals"]) == 25 > len(sources[1].groups)  # the small source repeats, reshuffled


def test_deterministic_and_resumable_at_any_item(sources):
    whole = [_key(i) for i in itertools.islice(iter(MixtureStream(sources, seed=1, block=6)), 30)]
    again = [_key(i) for i in itertools.islice(iter(MixtureStream(sources, seed=1, block=6)), 30)]
    assert whole == again
    for start in (1, 6, 17):
        resumed = MixtureStream(sources, seed=1, block=6, start=lambda start=start: start)
        assert [_key(i) for i in itertools.islice(iter(resumed), 30 - start)] == whole[start:]
    assert whole != [_key(i) for i in itertools.islice(iter(MixtureStream(sources, seed=2, block=6)), 30)]


def test_mixture_configs_from_the_data_group():
    data = OmegaConf.create({"name": "x", "path": "p", "dataset": ["a_task0", "b_task3"], "n_negatives": 4,
                             "mixture": None})  # fmt: skip
    assert [(n, w, c.dataset) for n, w, c in mixture_configs(data)] == [
        ("a_task0", 1.0, "a_task0"), ("b_task3", 1.0, "b_task3")]  # fmt: skip
    data.mixture = {"one": {"path": "q", "weight": 2}, "two": {"dataset": "c"}}
    assert [(n, w, c.path, c.dataset) for n, w, c in mixture_configs(data)] == [
        ("one", 2.0, "q", ["a_task0", "b_task3"]), ("two", 1.0, "p", "c")]  # fmt: skip
    data.mixture = {"one": {"weight": 0}}
    with pytest.raises(ConfigError, match=r"data.mixture.one.weight=0 must be a number > 0"):
        mixture_configs(data)
    data.mixture, data.dataset = None, "a_task0"
    assert [n for n, _, _ in mixture_configs(data)] == ["x"]


def test_a_run_trains_on_the_mixture_and_logs_each_source(tmp_path):
    from urlkit.run import train

    small = write_small_dataset(tmp_path / "small")
    animals = jsonl_dataset(tmp_path / "animals")
    mixture = f"+data.mixture={{small: {{path: '{small}', weight: 3}}, animals: {{path: '{animals}'}}}}"
    cfg = compose_train(small, mixture.replace("+data", "data"), "train.queries_per_step=2", "train.max_steps=4",
                        "data.mixture_block=8", "data.n_negatives=2", "eval.test_queries=2")  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["mixture"] == {"small": {"weight": 3.0, "items": 6}, "animals": {"weight": 1.0, "items": 2}}
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
