"""W&B without an API key: offline, no prompt, no hang; a killed run's offline data can be synced.

No network and no W&B account here, so "syncable" is checked as far as it can be offline:
the ``.wandb`` files of the killed and of the resumed attempt are well-formed record logs
holding the steps each attempt logged, and ``wandb sync --dry-run`` accepts both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.reliability_helpers import Launcher, history, train_args
from helpers.run_helpers import write_small_dataset
from helpers.wandb_log import wandb_records


def logged_steps(path: Path) -> list[int]:
    steps = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            if "train/loss" in items:
                steps.append(int(items["trainer/global_step"]))
    return steps


@pytest.fixture
def offline_env(tmp_path):
    """No key, no netrc, no W&B settings of this machine; everything W&B writes stays in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_BASE_URL": None,
            "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"), "WANDB_CACHE_DIR": str(home / ".cache"),
            "WANDB_DATA_DIR": str(home / ".data"), "NETRC": str(home / ".netrc")}  # fmt: skip


def test_a_killed_offline_wandb_run_keeps_its_steps_and_both_attempts_are_syncable(tmp_path, offline_env):
    launcher = Launcher(offline_env)  # the runs inherit its environment: no key, no netrc
    data = write_small_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    settings = ["logger=wandb", "logger.flush_interval_s=0.2", "train.max_steps=4", "checkpoint.every_n_steps=2"]

    # killed 1 s after step 3 (W&B flushed meanwhile), stdin closed: a prompt would fail the run
    killed = launcher.run(train_args(data, run_dir, *settings), die="step:3+1s")
    assert killed.returncode == -9, killed.output[-3000:]
    (first,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    wandb_id = json.loads((run_dir / "run.json").read_text())["wandb_id"]
    assert first.name.endswith(wandb_id)
    assert logged_steps(first / f"run-{wandb_id}.wandb") == [1, 2, 3]

    resumed = launcher.run([f"resume={run_dir}"])
    launcher.close()
    assert resumed.returncode == 0, resumed.output[-3000:]
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(wandb_id) for p in offline)  # one W&B run, two attempts
    second = next(p for p in offline if p != first)
    assert logged_steps(second / f"run-{wandb_id}.wandb") == [3, 4]  # replayed from the checkpoint of step 2
    assert [row["step"] for row in history(run_dir)] == ["1", "2", "3", "4"]  # each step once

    sync = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", *map(str, offline)],
        env={k: v for k, v in {**os.environ, **offline_env}.items() if v is not None},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    assert "Would sync 2 run(s)" in sync.stdout + sync.stderr
