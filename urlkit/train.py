"""One training run in a run directory: the library function behind ``python -m urlkit.run``.

Read top to bottom, it is the whole run: build the pieces (:mod:`urlkit.build`), hand them
to Lightning, evaluate at the end. ``python -m urlkit.run`` (Hydra) and ``python -m
urlkit.study`` call :func:`train`.

Reliability (docs/reliability.md): checkpoints are written atomically and hold the RNG
state; ``resume=<run dir>`` continues a killed run exactly (from its last checkpoint, or
from scratch in the same directory when it died before the first one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from urlkit.errors import EXIT_CTRL_C, EXIT_INTERRUPTED, ConfigError

if TYPE_CHECKING:
    from urlkit.data.picture_checks import PictureShare


def train(cfg: DictConfig, run_dir: Path, command: list[str] | None = None) -> dict[str, float]:
    """One training run in ``run_dir``; returns the final metrics (also in metrics.json).
    ``command``: the command line's overrides, recorded in run.json with the SLURM job's id
    so that the job, requeued, finds its run (:mod:`urlkit.slurm`).

    ``run.json`` says how it ended: ``finished``, ``failed`` (with the error) or
    ``interrupted`` (Ctrl-C; SIGTERM, which also exits with status 143, and during training
    first checkpoints the step in flight, :mod:`urlkit.training.preemption`); a run killed
    outright stays ``running`` with the pid of its process.

    Under DDP every process runs this function. Every rank first checks that the folder
    holds no earlier run, so that all refuse together; then only global rank 0 (as Lightning
    will number the processes, see ``urlkit.training.distributed.launch_rank``) writes and
    reports the run directory, the other ranks read its checkpoint and nothing else.
    """
    from urlkit.build import trainer_arguments
    from urlkit.config import launch_id
    from urlkit.data.picture_checks import PictureShare
    from urlkit.records import RunDirectory, new_run_id
    from urlkit.slurm import job_record
    from urlkit.training.distributed import launch_layout

    rank, world = launch_layout(trainer_arguments(cfg.trainer))
    # every rank loads every split before the ranks connect: each verifies its share of the pictures
    share = PictureShare(rank, world) if world > 1 else None
    if not cfg.get("resume"):
        # every rank, before any collective: a rank that went on alone would wait for ever
        # (30 min, torch's timeout) in the process group for a rank 0 that has refused
        _check_no_earlier_run(Path(run_dir), rank)
    if rank != 0:
        start_step = (checkpoint_step(_last_checkpoint(run_dir)) or 0) if cfg.get("resume") else 0
        return _fit_and_evaluate(cfg, Path(run_dir), None, "", start_step, share)
    run = RunDirectory(run_dir)
    start_step = restart_point(run) if cfg.get("resume") else 0
    launch = launch_id() or new_run_id()
    # a resumed run starts clean: the error of the attempt it continues is not this one's;
    # run.json names this launch before config.yaml marks the folder as a run
    job = job_record(command) if command is not None else None
    info = run.update_info(status="running", error=None, launch=launch, **({"slurm": job} if job else {}),
                           wandb_id=run.read_info().get("wandb_id") or new_run_id())  # fmt: skip
    run.write_config(OmegaConf.to_container(cfg, resolve=True))
    inherited = os.environ.get("URLKIT_LAUNCH")
    os.environ["URLKIT_LAUNCH"] = launch  # the ranks Lightning's launcher starts inherit it
    restore_sigterm = _sigterm_interrupts()
    try:
        return _fit_and_evaluate(cfg, run.path, run, info["wandb_id"], start_step, share)
    except BaseException as err:
        interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
        error = type(err).__name__ + (f": {err}" if str(err) else "")
        run.update_info(status="interrupted" if interrupted else "failed", error=error)
        if isinstance(err, KeyboardInterrupt):  # Ctrl-C outside fit (start-up, final evaluation)
            print(f"\n[urlkit] interrupted; resume={run.path} continues the run", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CTRL_C) from None  # said in one line, not a traceback
        if isinstance(err, SystemExit) and not err.code:
            # Lightning turns SIGTERM (a scheduler pre-empting the job) into SystemExit(None), which
            # would exit 0 and tell a sweep agent the run succeeded
            raise SystemExit(EXIT_INTERRUPTED) from err
        raise
    finally:
        restore_sigterm()
        _restore_variable("URLKIT_LAUNCH", inherited)


def _sigterm_interrupts():
    """Make SIGTERM end the run as ``interrupted`` (exit status 143) also outside
    ``trainer.fit``: loading data, building the model, the final evaluation. Lightning handles
    SIGTERM only inside fit; elsewhere the default action killed the process and run.json
    stayed ``running``. Returns the function that puts the previous handler back."""
    import signal
    import threading

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        return lambda: None

    def interrupt(signum, frame):
        # inside fit Lightning's handler calls this one after its own (it chains the handler it
        # found) and stops the loop itself once the step is done: leave it to Lightning there
        if signal.getsignal(signal.SIGTERM) is interrupt:
            raise SIGTERMException()  # Lightning's, so both ways read the same in run.json

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _check_no_earlier_run(run_dir: Path, rank: int) -> None:
    """Refuse a folder that holds a run of an earlier launch (read-only, so every rank can run
    it before any collective). Rank 0 refuses any run there; a rank other than 0 accepts the
    one its own rank 0 has just started (run.json: this launch's id, status running)."""
    from urlkit.config import launch_id, launcher_job_id
    from urlkit.records import RunDirectory

    if not (run_dir / "config.yaml").exists():
        return
    try:
        info = RunDirectory(run_dir).read_info()
    except ConfigError:  # run.json cut short: the folder still holds a run, refused below as any other
        info = {}
    mine = launch_id()
    if rank != 0 and mine is not None and info.get("launch") == mine and info.get("status") == "running":
        return
    job = launcher_job_id()
    if job and run_dir.name.startswith(f"{job}_"):
        # the launcher's job id named the folder: a requeued SLURM job (same job id) or a
        # restarted torchrun rendezvous lands here without the user having named anything
        raise ConfigError(
            f"{run_dir} already holds a urlkit run, in the folder the job id {job} names (a requeued or "
            f"restarted job keeps its id): continue it by starting the job with resume={run_dir}, "
            "or start a new run with hydra.run.dir=<a new directory>"
        )
    raise ConfigError(
        f"{run_dir} already holds a urlkit run: continue it with resume={run_dir}, "
        "or leave hydra.run.dir unset to get a new directory"
    )


def _restore_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _last_checkpoint(run_dir: Path) -> Path | None:
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if last.exists() else None


def _fit_and_evaluate(cfg: DictConfig, run_dir: Path, run, wandb_id: str, start_step: int,
                      picture_share: PictureShare | None = None) -> dict[str, float]:
    """``run``: the RunDirectory on rank 0, None on the other ranks (which write nothing);
    ``picture_share``: the pictures this rank verifies (urlkit.data.picture_checks, DDP only)."""
    # heavy imports here, not at module level: `python -m urlkit.run --help` stays instant
    import warnings

    import lightning as L
    from torch.utils.data import DataLoader

    from urlkit.build import (
        build_evaluator,
        build_reranker,
        check_direction,
        shared_queries,
        trainer_arguments,
        training_workload,
        weight_options,
    )
    from urlkit.config_checks import temperature_note
    from urlkit.data.stream import RankShard
    from urlkit.model.hub import check_same_base_model
    from urlkit.records import RunDirectory
    from urlkit.training.callbacks import (
        FinalEvaluation,
        MixtureLog,
        PeriodicEvaluation,
        step_progress_bar,
    )
    from urlkit.training.checkpointing import AtomicCheckpointIO
    from urlkit.training.loggers import finish, make_loggers, route_lightning_logging
    from urlkit.training.module import RerankerModule
    from urlkit.training.preemption import (
        PreemptionCheckpoint,
        cluster_plugins,
        signal_handlers_kept,
    )

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    say = print if run is not None else (lambda *args, **kwargs: None)  # rank 0 reports

    # data: the training groups and the first-stage candidates of dev and test
    # (several sources with data.mixture or a list of data.dataset: urlkit/data/mixture.py)
    workload = training_workload(cfg, picture_share=picture_share)
    train_split = workload.split
    # a resumed run's expanded token set is the one its checkpoint's head was trained on (run.json,
    # in the run directory every rank reads the checkpoint from), not ranked again on data that
    # may have grown since or in a dtype another machine's model.dtype=auto chose
    earlier = RunDirectory(run_dir).read_info() if cfg.get("resume") else {}
    # a resume continues on the base weights and in the dtype the run trained on so far
    built = build_reranker(_continued_model(cfg, earlier, run_dir, say) if earlier else cfg,
                           sample=train_split, recorded_tokens=earlier.get("token_ids"))  # fmt: skip
    if earlier:
        check_same_base_model(earlier.get("base_model"), built.backbone.origin, run=f"resume={run_dir}",
                              use="continue", instead="start a new run")  # fmt: skip
    for source in workload.sources:
        built.renderer.validate(source.groups.split)  # an over-long query fails now, not mid-epoch
        say(f"[urlkit] {source.groups.report()}", flush=True)
    if run is not None:
        # urlkit.rerank's default instruction, the dtype model.dtype resolved to (auto: this
        # machine's choice), which python -m urlkit.export writes the model in, and where the
        # base weights came from (a hub id's commit: main moves on; an export's card names it)
        run.update_info(instruction=train_split.instruction,
                        model_dtype=str(built.backbone.model.dtype).removeprefix("torch."),
                        base_model=built.backbone.origin,
                        token_ids=[int(i) for i in built.token_ids])  # the head's set, which load_trained reads
    if note := temperature_note(cfg):
        say(f"[urlkit] note: {note}", flush=True)
    evaluator = build_evaluator(cfg, built, picture_share)
    for line in shared_queries([source.groups.split for source in workload.sources], evaluator.sets):
        say(f"[urlkit] warning: {line}", flush=True)  # said, never silent; the run goes on

    # model: reranker + URL loss; the module restores its counters and RNG from a checkpoint
    module = RerankerModule(
        built.reranker,
        weight=weight_options(cfg),
        direction=check_direction(cfg),
        loss=cfg.get("loss", "url"),
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_steps,
        max_steps=cfg.train.max_steps,
        accumulate=cfg.train.accumulate,
        grad_clip=cfg.train.grad_clip,
        chunk_size=cfg.train.chunk_size,
        nonfinite=cfg.train.nonfinite,
        max_consecutive_skips=cfg.train.get("max_consecutive_skips", 20),
        history=run.history if run is not None else None,
        histogram_every_n_steps=cfg.log.histogram_every_n_steps,
        log_every_n_steps=cfg.log.every_n_steps,
    )
    stream = workload.stream(cfg.seed, start=lambda: module.items_consumed)  # global items (all ranks)
    mixture = [MixtureLog(stream, run, lambda: module.items_consumed)] if len(workload.sources) > 1 and run else []
    if mixture:
        say(f"[urlkit] {stream.report()}", flush=True)

    # checkpoints hold the state after the step, which is what resume needs
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # Lightning's own pytree helper against torch's newer API: nothing a user can change
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    route_lightning_logging()
    loggers = make_loggers(cfg, run, wandb_id=wandb_id) if run is not None else []
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=Path(run_dir) / "checkpoints", every_n_train_steps=cfg.checkpoint.every_n_steps,
        save_last=True, save_top_k=0, enable_version_counter=False,
    )  # fmt: skip
    arguments = trainer_arguments(cfg.trainer)
    bar = [step_progress_bar()] if arguments.get("enable_progress_bar", True) else []
    trainer = L.Trainer(
        **arguments,
        max_steps=cfg.train.max_steps,
        logger=loggers or False,
        # a SIGTERM or SLURM's requeue signal: last.ckpt of the step, after its dev evaluation, then stop
        callbacks=[checkpoints, PeriodicEvaluation(evaluator, run, cfg.eval.every_n_steps), *mixture,
                   PreemptionCheckpoint(Path(run_dir) / "checkpoints" / "last.ckpt"), *bar],
        # write, fsync, rename: a kill mid-save keeps the last one; Lightning's SLURM requeue off
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )

    # each rank reads its share of the one global stream (urlkit/data/stream.py, RankShard)
    if trainer.world_size > 1:
        stream = RankShard(stream, trainer.global_rank, trainer.world_size, cfg.train.queries_per_step)
    loader = DataLoader(
        stream, batch_size=cfg.train.queries_per_step, collate_fn=workload.collator(built.renderer, cfg.train.chunk_size)
    )
    ckpt_path = str(_last_checkpoint(run_dir)) if start_step else None
    with signal_handlers_kept():  # also when fit fails: Lightning then calls no callback's teardown
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    # max_steps is not a multiple of checkpoint.every_n_steps: keep the final weights (what
    # urlkit.evaluate and urlkit.rerank load, and where a resume restarts). Every rank calls
    # save_checkpoint (Lightning writes on rank 0 and gathers from all), so rank 0 decides,
    # from the file it wrote, for all: ranks that disagreed would pair different collectives
    unsaved = trainer.global_step != checkpoint_step(_last_checkpoint(run_dir)) if run is not None else None
    if trainer.strategy.broadcast(unsaved, src=0):
        trainer.save_checkpoint(Path(run_dir) / "checkpoints" / "last.ckpt")

    metrics = FinalEvaluation(evaluator, run)(trainer.global_step)
    if run is None:
        return metrics  # the benchmark suite (one process) and the records are rank 0's
    # the split those metrics scored: their keys name the role (test/...) even under data.test_split=dev
    scored = evaluator.sets["test"].split
    run.update_info(final_split={"dataset": scored.name, "split": scored.split})
    if cfg.get("benchmark"):
        metrics.update(benchmark_suite(cfg, built, run, trainer.global_step))
        run.write_metrics(metrics)
    finish(loggers, metrics)
    run.update_info(status="finished", steps=trainer.global_step, skipped_steps=module.skipped_steps)
    return metrics


def _continued_model(cfg: DictConfig, earlier: dict, run_dir: Path, say) -> DictConfig:
    """The config a resumed run's reranker is built from: ``cfg`` with ``model.dtype=auto``
    resolved to the dtype run.json records it trained in (:func:`urlkit.hardware.resumed_weight_dtype`;
    not this machine's choice) and a hub backbone pinned to the commit it trained on
    (:func:`urlkit.model.hub.trained_revision`; not what the cache's main points to now).
    config.yaml keeps what the user wrote."""
    import copy

    from urlkit.hardware import resumed_weight_dtype
    from urlkit.model.hub import trained_revision

    dtype, note = resumed_weight_dtype(str(cfg.model.get("dtype", "float32")), earlier.get("model_dtype"))
    if note:
        say(f"[urlkit] {run_dir}: {note}", flush=True)
    commit = trained_revision(cfg.model, earlier.get("base_model"))
    continued = copy.deepcopy(cfg)
    for key, value in (("model.dtype", dtype), ("model.revision", commit)):
        if value is not None:
            OmegaConf.update(continued, key, value, force_add=True)
    return continued


def benchmark_suite(cfg: DictConfig, built, run, step: int) -> dict[str, float]:
    """``benchmark=<suite>``: the trained reranker on every dataset of the suite, as
    ``python -m urlkit.evaluate benchmark=<suite> run_dir=<run>`` would (benchmark.csv in the
    run directory; a resumed run reads back the datasets it had finished at the same step).
    The suite's per-query files go to ``benchmark/per_query/``: ``per_query/`` is the final
    evaluation's, and a suite entry named as the run's dataset would write over its files."""
    from urlkit.build import check_direction
    from urlkit.evaluation.benchmark import RESULTS_FOLDER, evaluate_suite

    results = evaluate_suite(
        cfg.benchmark, cfg.data, built, "reranker", check_direction(cfg), run.path, depth=cfg.eval.depth,
        batch_size=cfg.eval.batch_size, max_queries=cfg.eval.test_queries,
        merge_lora=bool(cfg.eval.get("merge_lora", True)), settings={"step": step},
        per_query_dir=run.path / RESULTS_FOLDER / "per_query",
    )  # fmt: skip
    return {f"benchmark/{r.model}/{r.dataset}/{r.metric}": float(r.score) for r in results.itertuples()}


def checkpoint_step(path: Path | None) -> int | None:
    """The optimizer step a checkpoint was saved at (None: no checkpoint)."""
    if path is None:
        return None
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception as err:  # written atomically, so only a foreign or damaged file gets here
        raise FileNotFoundError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); "
            "move it away to restart the run from scratch"
        ) from err


def restart_point(run) -> int:
    """Prepare ``run`` to continue; returns the step it restarts from (0 = from scratch).

    The history keeps the steps up to the last checkpoint (the rows a killed process logged
    after it are replayed identically); the final test evaluation is always redone. A run
    killed before its first checkpoint starts over in the same directory.
    """
    step = checkpoint_step(run.last_checkpoint()) or 0
    dropped = run.history.truncate_after(step)
    dropped += run.evals.drop(
        lambda row: int(float(row["step"])) > step or row.get("split", "").startswith("test:")
    )
    where = f"from step {step}" if step else "from scratch (it had no checkpoint yet)"
    print(f"[urlkit] resuming {run.path} {where}; {dropped} rows logged after it dropped", flush=True)
    return step
