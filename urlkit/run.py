"""Train a reranker: ``python -m urlkit.run weight=sft direction=cl``.

Hydra composes the config (``conf/train.yaml``); this app checks it, picks the run directory
and calls :func:`urlkit.train.train`, the whole run read top to bottom.

Reliability (docs/reliability.md): the config is checked before any work; bad input ends
with ``error: <message>`` and exit status 2; ``resume=<run dir>`` continues a killed run
exactly, in its own directory, with the config it started with; a requeued SLURM job
continues the run it started the same way, without ``resume=`` (:mod:`urlkit.slurm`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from urlkit import slurm
from urlkit.config import check_resume_target, override_key, print_on_rank_zero, register_resolvers
from urlkit.config_checks import check_train_config
from urlkit.errors import ConfigError, reported_errors
from urlkit.paths import REPO_ROOT
from urlkit.records import read_run_info
from urlkit.train import train

register_resolvers()
# absolute, so that `python -m urlkit.run`, the `urlkit-run` console script and
# `from urlkit.run import main` all find conf/ (a relative path resolves against the caller)
CONFIG_DIR = str(REPO_ROOT / "conf")


def run_directory(cfg: DictConfig) -> Path:
    """The Hydra output directory, or the directory of the run being resumed."""
    if cfg.get("resume"):
        return Path(cfg.resume)
    return Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)


# what a resume may set anew: the frozen weights' dtype (the adapters, head and optimizer stay float32)
RESUME_MAY_CHANGE = ("model.dtype",)


def resume_config(run_dir: Path, saved: DictConfig, given: DictConfig | None = None,
                  overrides: list[str] = ()) -> DictConfig:  # fmt: skip
    """The config a resumed run continues with: the one it started with (``saved``, its
    config.yaml as :func:`check_resume_target` read it: same data, model, loss and steps), plus
    ``resume=<run_dir>``. An override on the command line (``given``: the config it composed)
    that would change it is an error naming it: a resumed run cannot become another run (a new
    setting, more steps included, is a new run); one that repeats the saved value (a requeued
    job's command line) is fine. ``model.dtype`` alone may change: the frozen weights' dtype (a
    machine without bf16 units continuing a bf16 run in float32), said when the run continues
    (:func:`urlkit.hardware.resumed_weight_dtype`)."""
    changed, adopted = [], {}
    # the last override of a key is the one Hydra applied
    last = {override_key(override): override for override in overrides} if given is not None else {}
    for key, override in last.items():
        if key in ("resume", "hydra") or key.startswith("hydra."):
            continue
        try:
            asked, kept = OmegaConf.select(given, key, default=None), OmegaConf.select(saved, key, default=None)
            plain = [OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
                     for v in (asked, kept)]  # fmt: skip
        except Exception:  # noqa: BLE001 - a value that cannot even be resolved is not the saved one
            plain = [override, None]
        if plain[0] != plain[1] and key in RESUME_MAY_CHANGE:
            adopted[key] = plain[0]
        elif plain[0] != plain[1]:
            changed.append(f"{override} (the run has {key}={plain[1]!r})" if not isinstance(plain[1], dict) else override)
    if changed:
        raise ConfigError(f"resume={run_dir} continues the run with the config it started with; these overrides "
                          f"would change it: {'; '.join(changed)}. Resume without them, or start a new run")
    for key, value in adopted.items():
        OmegaConf.update(saved, key, value, force_add=True)
    saved.resume = str(run_dir)
    return saved


def check_sweep_of_one_process(cfg: DictConfig) -> None:
    """Refuse ``-m`` (Hydra's multirun) for a job of several processes. Hydra runs a sweep's
    jobs one after another in this process, but Lightning starts the other ranks with this
    process's command line, ``-m`` included: each rank would be a sweep of its own, with its
    own run directories, and the ranks would pair different collectives (a crash, then a hang)."""
    from hydra.types import RunMode

    if hydra.core.hydra_config.HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    from urlkit.build import trainer_arguments
    from urlkit.training.distributed import launch_layout

    _, world = launch_layout(trainer_arguments(cfg.trainer))
    if world > 1:
        raise ConfigError(
            f"-m (a Hydra multirun) cannot run a job of {world} processes: Lightning would start every other rank "
            "as a sweep of its own. Sweep with one job per sweep point instead, each without -m: a shell loop "
            "(for seed in 0 1 2; do python -m urlkit.run seed=$seed ...; done) or a SLURM job array"
        )


def continues_requeued_run(run_dir: Path, overrides: list[str]) -> bool:
    """Whether this process is a requeued SLURM job whose run, started by this job with this
    command line, is in ``run_dir`` (urlkit.slurm). Every rank decides alike: only a run of an
    earlier start of the job can hold a checkpoint, and rank 0 of this start writes nothing
    that removes its record; a rank that sees the run rank 0 has just started in the folder
    (the earlier start left none) resumes from no checkpoint, which is the same fresh start."""
    if not slurm.requeued() or not (run_dir / "config.yaml").exists():
        return False  # no run yet (or only its run.json): a fresh start in the folder, same W&B id
    # False: another run's folder, refused as any folder that holds a run
    return slurm.started_by_this_job(run_dir, overrides)


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with reported_errors():  # bad input: "error: <message>", exit status 2
        check_sweep_of_one_process(cfg)
        run_dir = run_directory(cfg)
        overrides = list(hydra.core.hydra_config.HydraConfig.get().overrides.task)
        requeued = not cfg.get("resume") and continues_requeued_run(run_dir, overrides)
        if requeued:
            print_on_rank_zero(f"[urlkit] SLURM job {slurm.job_id()} was requeued (restart "
                               f"{slurm.restart_count()}): continuing its run", flush=True)  # fmt: skip
            if read_run_info(run_dir).get("status") == "finished":  # a later command of the job script was cut short
                print_on_rank_zero(f"[urlkit] {run_dir} finished before the requeue: nothing to do", flush=True)
                metrics_file = run_dir / "metrics.json"
                return json.loads(metrics_file.read_text()).get("test/ndcg@10") if metrics_file.exists() else None
        if cfg.get("resume") or requeued:
            # the run's config, read (and checked) once here, is the one it continues with
            cfg = resume_config(run_dir, check_resume_target(run_dir), cfg, overrides)
        check_train_config(cfg)
        # rank 0 speaks for the run: another rank's final metrics lack the benchmark's, say
        print_on_rank_zero(f"[urlkit] run directory: {run_dir}", flush=True)
        metrics = train(cfg, run_dir, command=overrides)
        print_on_rank_zero(f"[urlkit] final metrics: {metrics}", flush=True)
        return metrics.get("test/ndcg@10")


if __name__ == "__main__":
    main()
