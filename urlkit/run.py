"""Train a reranker: ``python -m urlkit.run weight=sft direction=cl``.

Hydra composes the config (``conf/train.yaml``); this file builds the pieces, hands them to
Lightning, and evaluates at the end. Read top to bottom, it is the whole run.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from urlkit.resolvers import register_resolvers

register_resolvers()


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """One training run in ``run_dir``; returns the final metrics (also in metrics.json)."""
    # heavy imports here, not at module level: `python -m urlkit.run --help` stays instant
    import warnings

    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from urlkit.build import build_reranker, load_data_split, trainer_arguments
    from urlkit.callbacks import Evaluator, FinalEvaluation, PeriodicEvaluation
    from urlkit.data.candidates import first_stage
    from urlkit.data.groups import GroupCollator, TrainGroups
    from urlkit.data.stream import GroupStream
    from urlkit.loggers import make_loggers
    from urlkit.module import RerankerModule
    from urlkit.records import RunDirectory, new_run_id

    run = RunDirectory(run_dir)
    resuming = run.last_checkpoint() is not None and cfg.get("resume")
    run.write_config(OmegaConf.to_container(cfg, resolve=True))
    info = run.update_info(status="running", wandb_id=run.read_info().get("wandb_id") or new_run_id())
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # data: the training groups and the first-stage candidates of dev and test
    train_split = load_data_split(cfg.data, cfg.data.train_split)
    built = build_reranker(cfg, sample=train_split)
    built.renderer.validate(train_split)  # an over-long query fails now, not mid-epoch
    train_ranking = first_stage(
        train_split, cfg.data.retriever, k=cfg.data.hard_depth, run_file=cfg.data.run_file
    )
    groups = TrainGroups(
        train_split, train_ranking, cfg.data.n_negatives,
        hard_fraction=cfg.data.hard_fraction, hard_depth=cfg.data.hard_depth, seed=cfg.seed,
    )  # fmt: skip
    print(f"[urlkit] {groups.report()}", flush=True)
    evaluator = Evaluator.from_config(cfg, built)

    # model: reranker + URL loss; the module restores its counters from a checkpoint
    module = RerankerModule(
        built.reranker,
        weight=OmegaConf.to_container(cfg.weight),
        direction=cfg.direction.name,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_steps,
        max_steps=cfg.train.max_steps,
        accumulate=cfg.train.accumulate,
        grad_clip=cfg.train.grad_clip,
        chunk_size=cfg.train.chunk_size,
        nonfinite=cfg.train.nonfinite,
        history=run.history,
        histogram_every_n_steps=cfg.log.histogram_every_n_steps,
    )
    stream = GroupStream(groups, seed=cfg.seed, start=lambda: module.items_consumed)
    loader = DataLoader(
        stream, batch_size=cfg.train.queries_per_step, collate_fn=GroupCollator(built.renderer, train_split, cfg.train.chunk_size)
    )

    # checkpoints hold the state after the step, which is what resume needs
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    loggers = make_loggers(cfg, run, wandb_id=info["wandb_id"])
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run.checkpoints, every_n_train_steps=cfg.checkpoint.every_n_steps,
        save_last=True, save_top_k=0, enable_version_counter=False,
    )  # fmt: skip
    trainer = L.Trainer(
        **trainer_arguments(cfg.trainer),
        max_steps=cfg.train.max_steps,
        logger=loggers or False,
        callbacks=[checkpoints, PeriodicEvaluation(evaluator, run, cfg.eval.every_n_steps)],
        default_root_dir=str(run.path),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    ckpt_path = None
    if resuming:
        ckpt_path = str(run.last_checkpoint())
        step = int(torch.load(ckpt_path, map_location="cpu", weights_only=False)["global_step"])
        dropped = run.history.truncate_after(step) + run.evals.truncate_after(step)
        print(f"[urlkit] resuming {run.path} from step {step} ({dropped} rows after it dropped)", flush=True)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)

    metrics = FinalEvaluation(evaluator, run)(trainer.global_step)
    for logger in loggers:
        logger.log_hyperparams({})  # flush
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "summary"):
            logger.experiment.summary.update(metrics)
        logger.finalize("success")
    run.update_info(status="finished", steps=trainer.global_step)
    return metrics


def run_directory(cfg: DictConfig) -> Path:
    """The Hydra output directory, or the directory of the run being resumed."""
    if cfg.get("resume"):
        path = Path(cfg.resume)
        if not (path / "config.yaml").exists():
            raise FileNotFoundError(f"resume={cfg.resume}: not a urlkit run directory (no config.yaml)")
        return path
    return Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = run_directory(cfg)
    if cfg.get("resume"):
        # a resumed run keeps the config it started with (same data, model, loss, steps)
        saved = OmegaConf.load(run_dir / "config.yaml")
        saved.resume = cfg.resume
        cfg = saved
    print(f"[urlkit] run directory: {run_dir}", flush=True)
    metrics = train(cfg, run_dir)
    print(f"[urlkit] final metrics: {metrics}", flush=True)
    return metrics.get("test/ndcg@10")


if __name__ == "__main__":
    main()
