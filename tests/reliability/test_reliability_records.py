"""The run directory's logs survive a kill: rows are fsynced as written, a torn row is dropped."""

from __future__ import annotations

import os

import pytest

from urlkit.records import CsvLog, atomic_write_text


def test_every_appended_row_is_fsynced(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    log = CsvLog(tmp_path / "history.csv")
    for step in (1, 2, 3):
        log.append({"step": step, "loss": 0.5})
    assert synced.count(str(tmp_path / "history.csv")) == 3


def test_a_row_torn_by_a_kill_is_dropped_when_the_log_is_reopened(tmp_path):
    path = tmp_path / "history.csv"
    log = CsvLog(path)
    log.append({"step": 1, "loss": 0.5})
    log.append({"step": 2, "loss": 0.25})
    with path.open("a") as f:
        f.write("3,0.1")  # the process died in the middle of the row: no newline
    reopened = CsvLog(path)
    assert [row["step"] for row in reopened.rows()] == ["1", "2"]
    assert reopened.truncate_after(1) == 1  # a resume from step 1 still works on the repaired file
    reopened.append({"step": 2, "loss": 0.3})
    assert [(row["step"], row["loss"]) for row in reopened.rows()] == [("1", "0.5"), ("2", "0.3")]


def test_a_header_torn_by_a_kill_leaves_an_empty_log(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("step,spl")
    log = CsvLog(path)
    assert log.rows() == [] and log.columns == []
    log.append({"step": 1, "split": "dev"})
    assert log.rows() == [{"step": "1", "split": "dev"}]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"ndcg": 0.5}')
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, '{"ndcg": 0.6}')
    assert path.read_text() == '{"ndcg": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    """ENOSPC comes from write or fsync with no file name ("No space left on device", nothing
    else); the error says which file, and the old one is intact."""
    import errno

    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(OSError) as err:
        atomic_write_text(path, "new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert str(err.value) == f"[Errno 28] No space left on device; the previous file, if any, is intact: '{path}'"
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
