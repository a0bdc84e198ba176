"""The run directory keeps history readable after kills and resumes."""

from pathlib import Path

from urlkit.records import CsvLog, RunDirectory, folder_run_id, new_run_id


def test_history_appends_flushes_and_truncates_for_resume(tmp_path):
    run = RunDirectory(tmp_path / "run")
    for step in range(1, 6):
        run.history.append({"step": step, "loss": 1.0 / step})
    assert [r["step"] for r in run.history.rows()] == ["1", "2", "3", "4", "5"]
    # a resumed run reopens the same file and cuts the steps logged after the checkpoint
    reopened = RunDirectory(tmp_path / "run")
    assert reopened.history.truncate_after(3) == 2
    reopened.history.append({"step": 4, "loss": 0.3})
    assert [r["step"] for r in reopened.history.rows()] == ["1", "2", "3", "4"]


def test_new_columns_extend_the_header(tmp_path):
    log = CsvLog(tmp_path / "h.csv")
    log.append({"step": 1, "a": 1})
    log.append({"step": 2, "a": 2, "b": 3})
    rows = log.rows()
    assert rows[0] == {"step": "1", "a": "1", "b": ""}
    assert rows[1]["b"] == "3"


def test_run_ids_are_unique_and_info_is_kept(tmp_path):
    assert len({new_run_id() for _ in range(1000)}) == 1000
    run = RunDirectory(tmp_path)
    first = run.update_info(status="running")
    second = run.update_info(status="finished")
    assert first["run_id"] == second["run_id"] and second["status"] == "finished"


def test_run_json_names_the_run_by_its_folders_id(tmp_path):
    """outputs/runs/<time>_<run name>_<id>/run.json says the same <id> (it said another one);
    a folder named otherwise (a SLURM job's, hydra.run.dir) gets a new one."""
    from omegaconf import OmegaConf

    from urlkit.config import register_resolvers

    register_resolvers()
    folder = OmegaConf.create({"d": "${urlkit_run_dir:" + str(tmp_path) + ",sft-cl,null}"}).d
    info = RunDirectory(folder).update_info(status="running")
    assert folder.endswith("_" + info["run_id"]) and len(info["run_id"]) == 8
    other = RunDirectory(tmp_path / "my-run").update_info(status="running")
    assert len(other["run_id"]) == 8 and other["run_id"] != info["run_id"]


def test_a_run_name_with_a_slash_names_one_folder_under_runs(tmp_path, monkeypatch):
    # run_name=ablation/lr-high used to put the run in <time>_ablation/lr-high_<id>: a folder
    # down, under one that looks like a run and is none; a multirun's subdir nested it the same way
    from omegaconf import open_dict

    from urlkit.grids import config_composer

    for variable in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(variable, raising=False)
    with config_composer() as compose:
        cfg = compose(["run_name=ablation/../lr-high", f"output_root={tmp_path}"])
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == tmp_path / "runs" and "_ablation-..-lr-high_" in run_dir.name
    assert folder_run_id(run_dir) is not None
    with open_dict(cfg):
        cfg.hydra.job.num = 3
    assert cfg.hydra.sweep.subdir == "3_ablation-..-lr-high"


def test_run_json_records_when_the_run_ended_and_its_wall_time_over_its_attempts(tmp_path, monkeypatch):
    """run.json recorded the start time and no end: the status that ends a run now comes with
    ``ended`` and ``wall_time_s``; a resumed attempt clears ``ended`` and adds its own seconds."""
    import time

    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    run = RunDirectory(tmp_path / "run")
    assert run.update_info(status="running").get("ended") is None
    clock[0] += 90.0
    ended = run.update_info(status="interrupted", error="SIGTERMException")
    assert ended["ended"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(clock[0]))
    assert ended["wall_time_s"] == 90.0
    clock[0] += 3600.0  # an hour in the queue, then resumed by another process
    resumed = RunDirectory(tmp_path / "run")
    again = resumed.update_info(status="running", error=None)
    assert again["ended"] is None and again["wall_time_s"] == 90.0  # the earlier attempts' so far
    clock[0] += 30.5
    resumed.update_info(steps=3)  # other fields leave the times alone
    finished = resumed.update_info(status="finished")
    assert finished["wall_time_s"] == 120.5 and finished["started"] == ended["started"]
    assert finished["ended"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(clock[0]))
    # an object that began no attempt (no status=running) adds its seconds to run.json's as it is then
    marker = RunDirectory(tmp_path / "run")
    clock[0] += 10.0
    assert marker.update_info(status="failed")["wall_time_s"] == 130.5
