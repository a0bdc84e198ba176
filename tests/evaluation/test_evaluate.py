"""python -m urlkit.evaluate on a BEIR folder given by data.path alone: no code changes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.data_builders import beir_dataset

from urlkit.paths import REPO_ROOT


def test_a_beir_folder_is_evaluated_with_data_path_alone(tmp_path):
    folder = beir_dataset(tmp_path / "scifact-like")
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", "model=tiny", "data=beir", f"data.path={folder}",
         f"output_root={tmp_path / 'out'}", "batch_size=4"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "bm25" in out.stdout and "tiny" in out.stdout  # the table has a BM25 row and the model's
    written = list((tmp_path / "out" / "evaluations").glob("*/metrics.json"))
    assert len(written) == 1
    metrics = json.loads(written[0].read_text())
    # keys: <model>/<split>/<dataset>/<metric>, the dataset named after the folder
    assert {"bm25/test/scifact-like/ndcg@10", "tiny/test/scifact-like/ndcg@10"} <= set(metrics)
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    per_query = written[0].parent / "per_query"
    assert (per_query / "scifact-like_test_tiny.trec").exists()
    assert (per_query / "scifact-like_test_tiny.csv").exists()


def test_a_trained_run_is_evaluated_on_its_own_data(tmp_path):
    """``python -m urlkit.evaluate run_dir=<run>`` scores the run's data with its last checkpoint:
    the folder is named after that data, its config.yaml records it and the run's model (not the
    defaults'),
    and the metrics are the ones the run wrote at its end (one scoring function)."""
    from helpers.run_helpers import compose_train, write_small_dataset
    from omegaconf import OmegaConf

    from urlkit.train import train

    data = write_small_dataset(tmp_path / "small")
    run_dir = tmp_path / "run"
    trained = train(compose_train(data, "data.name=small"), run_dir)
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", f"run_dir={run_dir}", f"output_root={tmp_path / 'out'}",
         "batch_size=8"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (folder,) = (tmp_path / "out" / "evaluations").iterdir()
    assert "_small_" in folder.name and "wordsense" not in folder.name, folder.name
    written = OmegaConf.load(folder / "config.yaml")
    assert written.data.path == str(data) and written.data.name == "small"
    assert written.model.name == "tiny" and written.run_dir == str(run_dir)  # the run's model, not the default's
    metrics = json.loads((folder / "metrics.json").read_text())
    for metric in ("ndcg@10", "mrr@10"):
        assert metrics[f"run/test/small/{metric}"] == pytest.approx(trained[f"test/{metric}"], abs=1e-6)
        assert metrics[f"bm25/test/small/{metric}"] == pytest.approx(trained[f"bm25/test/{metric}"], abs=1e-12)


def test_evaluating_into_a_training_runs_folder_is_refused_and_keeps_its_files(tmp_path):
    """hydra.run.dir=<the run> would have replaced the run's config.yaml (resume and export read
    it) and metrics.json with the evaluation's: refused, exit 2, the run's files as they were."""
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.train import train

    run_dir = tmp_path / "run"
    train(compose_train(write_small_dataset(tmp_path / "small")), run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.json", "run.json")}
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}", "batch_size=8"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"hydra.run.dir={run_dir} holds a training run" in out.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_a_data_key_set_with_run_dir_adjusts_the_runs_data_not_the_default_dataset(tmp_path):
    """``run_dir=<run> data.test_split=dev`` scores the run's data (its dev split), not the default
    data group (wordsense) with that key set; data.path (another dataset) still replaces it."""
    from helpers.run_helpers import compose_train, write_small_dataset
    from omegaconf import OmegaConf

    from urlkit.config import sets_data
    from urlkit.train import train

    data = write_small_dataset(tmp_path / "small")
    run_dir = tmp_path / "run"
    train(compose_train(data, "data.name=small"), run_dir)
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.evaluate", f"run_dir={run_dir}", "data.test_split=dev", "max_queries=2",
         f"output_root={tmp_path / 'out'}", "batch_size=8"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (folder,) = (tmp_path / "out" / "evaluations").iterdir()
    written = OmegaConf.load(folder / "config.yaml")
    assert written.data.path == str(data) and written.data.test_split == "dev" and "_small_" in folder.name
    assert "run/dev/small/ndcg@10" in json.loads((folder / "metrics.json").read_text())
    assert sets_data(["data.path=/x"]) and sets_data(["data=beir"]) and not sets_data(["+data.on_error=skip"])


def test_a_model_head_or_prompt_override_with_run_dir_is_refused_and_model_dtype_applies(tmp_path):
    """With run_dir the run's config.yaml builds the scorer: prompt=... or head.* given too were
    dropped without a word; now an error names them. model.dtype=... is the one that applies."""
    from helpers.run_helpers import compose_train, write_small_dataset
    from omegaconf import OmegaConf

    from urlkit.train import train

    run_dir = tmp_path / "run"
    train(compose_train(write_small_dataset(tmp_path / "small")), run_dir)
    base = [sys.executable, "-m", "urlkit.evaluate", f"run_dir={run_dir}", f"output_root={tmp_path / 'out'}",
            "batch_size=8"]
    refused = subprocess.run([*base, "prompt=qwen3_reranker", "head.trainable=true"],
                             capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "prompt=qwen3_reranker head.trainable=true would not be used" in refused.stderr
    assert not (tmp_path / "out" / "evaluations").exists() or not any((tmp_path / "out" / "evaluations").glob("*/metrics.json"))
    bf16 = subprocess.run([*base, "model.dtype=bfloat16"], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    (folder,) = [f for f in (tmp_path / "out" / "evaluations").iterdir() if (f / "metrics.json").exists()]
    assert OmegaConf.load(folder / "config.yaml").model.dtype == "bfloat16"
