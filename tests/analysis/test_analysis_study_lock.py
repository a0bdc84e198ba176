"""A run folder trained by one study at a time: urlkit/study/lock.py and the launcher's use of it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from urlkit.study.lock import LOCK_FILE, RunLocked, acquire, release


@pytest.fixture
def other_process():
    """A live process of this host, standing for a second study."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


def _hold(run_dir, host, pid):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps({"host": host, "pid": pid, "since": "2025-01-01T00:00:00"}))


def test_a_lock_names_its_holder_and_is_released(tmp_path):
    lock = acquire(tmp_path / "run")
    assert json.loads(lock.read_text())["host"] == socket.gethostname()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release(lock)
    assert not lock.exists()


def test_a_run_held_by_a_live_process_is_refused_naming_it(tmp_path, other_process):
    run_dir = tmp_path / "run"
    _hold(run_dir, socket.gethostname(), other_process.pid)
    with pytest.raises(RunLocked, match=f"pid {other_process.pid} on {socket.gethostname()} since 2025"):
        acquire(run_dir)
    # on another host the pid cannot be checked: refused too, naming the file to delete
    _hold(run_dir, "node-7", 1)
    with pytest.raises(RunLocked, match=f"pid 1 on node-7 .*delete {run_dir / LOCK_FILE}"):
        acquire(run_dir)
    assert json.loads((run_dir / LOCK_FILE).read_text())["host"] == "node-7"  # left as it was


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    _hold(run_dir, socket.gethostname(), dead.pid)
    lock = acquire(run_dir)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing left aside
    release(lock)


def test_a_study_skips_a_run_another_study_trains_and_says_so(tmp_path, other_process, capsys):
    """Two studies over the same experiments used to start the same run into one folder."""
    from urlkit.study.launch import run_all
    from urlkit.study.plan import plan

    (run,) = plan(["tau"], "tiny", ["weight.tau=1e-3"], tmp_path, "none")
    _hold(run.run_dir, socket.gethostname(), other_process.pid)
    failures = run_all([run], progress_every_s=0)
    assert [item for item, _ in failures] == [run]
    assert f"being trained by another study (pid {other_process.pid} on {socket.gethostname()}" in failures[0][1]
    assert f"[study] SKIPPED {run.run_dir} is being trained by another study" in capsys.readouterr().out
    assert sorted(p.name for p in run.run_dir.iterdir()) == [LOCK_FILE]  # no child started there
    assert not (run.run_dir.parent / f"{run.run_dir.name}.log").exists()


def test_a_run_another_study_finished_since_the_plan_is_kept_not_started_again(tmp_path, capsys):
    # the plan said "new"; by the time the lock is taken another study has trained it: urlkit.run
    # would refuse the folder ("already holds a urlkit run") and the study report a failure
    import yaml
    from omegaconf import OmegaConf

    from urlkit.study.launch import run_all
    from urlkit.study.plan import plan

    (run,) = plan(["tau"], "tiny", ["weight.tau=1e-3"], tmp_path, "none")
    assert run.state == "new"
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(run.cfg, resolve=True)))
    (run.run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    assert run_all([run], progress_every_s=0) == []
    assert f"[study] {run.run_dir} was finished meanwhile by another study: kept" in capsys.readouterr().out
    assert not (run.run_dir / LOCK_FILE).exists()
