"""Two training runs started at the same moment, same output root, same cold cache.

As two sweep agents on one machine: each gets its own run directory (history, checkpoints,
metrics), both finish, and the caches they both build at once (the tokenizer converted from
the GGUF file, the BM25 candidates) end up complete and correct.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers.reliability_helpers import Launcher, history, tiny
from helpers.run_helpers import write_small_dataset
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from urlkit.build import load_data_split
from urlkit.data import candidates
from urlkit.data.candidates import bm25_candidates


def test_two_runs_started_together_keep_apart_and_build_the_cold_caches_once(tmp_path, monkeypatch):
    data = write_small_dataset(tmp_path / "data")
    settings = [f"data.path={data}", f"output_root={tmp_path / 'out'}", "train.max_steps=3", "checkpoint.every_n_steps=2"]
    together = Launcher.shared().run_together(
        [[*tiny(), *settings, f"seed={seed}"] for seed in (0, 1)],  # no hydra.run.dir: urlkit names them
        env={"URLKIT_CACHE": str(tmp_path / "cache")},  # empty: both runs build it at once
    )
    for finished in together:
        assert finished.returncode == 0, finished.output[-3000:]

    # separate directories, each complete, each with its own checkpoints and history
    run_dirs = sorted((tmp_path / "out" / "runs").iterdir())
    assert len(run_dirs) == 2
    infos = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    assert {info["status"] for info in infos} == {"finished"}
    assert len({info["run_id"] for info in infos}) == 2 and len({info["pid"] for info in infos}) == 2
    seeds = set()
    for run_dir in run_dirs:
        assert [row["step"] for row in history(run_dir)] == ["1", "2", "3"]
        assert "test/ndcg@10" in json.loads((run_dir / "metrics.json").read_text())
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert saved["global_step"] == 3
        seeds.add(OmegaConf.load(run_dir / "config.yaml").seed)
    assert seeds == {0, 1}  # each directory holds its own run, not the other's

    # the caches both processes built at once: one tokenizer folder, loadable; BM25 files exact
    models = tmp_path / "cache" / "models"
    folders = [p for p in models.iterdir() if p.is_dir()]
    assert len(folders) == 1 and not list(folders[0].glob(".*.tmp-*"))
    assert AutoTokenizer.from_pretrained(folders[0] / "tokenizer").encode("yes", add_special_tokens=False) == [10407]
    cached = sorted((tmp_path / "cache" / "candidates").glob("bm25-*.json"))
    assert len(cached) == 2 and not list((tmp_path / "cache" / "candidates").glob("*.tmp"))
    monkeypatch.setenv("URLKIT_CACHE", str(tmp_path / "cache"))
    for split_name, depth in (("train", 100), ("test", 25)):  # data.hard_depth, eval.depth
        split = load_data_split(OmegaConf.create({"path": str(data)}), split_name)
        fresh = bm25_candidates(split, k=depth, cache=False)
        with monkeypatch.context() as patched:  # must come from the cache file, complete
            patched.setattr(candidates, "_bm25_rank", lambda *args: pytest.fail("BM25 cache missed"))
            assert bm25_candidates(split, k=depth) == fresh
