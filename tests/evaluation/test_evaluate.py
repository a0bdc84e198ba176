"""python -m urlkit.evaluate on a BEIR folder given by data.path alone: no code changes."""

from __future__ import annotations

import json
import subprocess
import sys

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
