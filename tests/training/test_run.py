"""The training entry point, end to end on the tiny model: every weight x direction and the probes."""

from __future__ import annotations

import csv
import json
import math

import pytest
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.train import train

WEIGHTS = ["sft", "cl", "base", "tau_mask", "base_x_sft"]
DIRECTIONS = ["sft", "cl", "rand"]
LOGGED = [
    "loss", "w_pos_mean", "w_pos_min", "w_pos_max", "w_neg_mean", "w_neg_min", "w_neg_max",
    "masked_fraction", "loss_sft_native", "loss_infonce_native",
    "w_sft_pos", "w_sft_neg", "w_cl_pos", "w_cl_neg", "w_base_pos", "w_base_neg",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("data") / "small")


def _history(run_dir):
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def _train(dataset, tmp_path, *overrides):
    cfg = compose_train(dataset, *overrides)
    run_dir = tmp_path / "run"
    metrics = train(cfg, run_dir)
    return run_dir, metrics, _history(run_dir)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_weight_direction_pair_trains_and_logs(dataset, tmp_path, weight, direction):
    run_dir, metrics, history = _train(dataset, tmp_path, f"weight={weight}", f"direction={direction}")
    assert [int(r["step"]) for r in history] == [1, 2, 3]
    for row in history:
        for key in LOGGED:
            assert math.isfinite(float(row[key])), (key, row[key])
    # the weights that trained are the family's own (counterfactual columns agree)
    if weight in ("sft", "cl", "base"):
        assert float(history[0]["w_pos_mean"]) == pytest.approx(float(history[0][f"w_{weight}_pos"]), rel=1e-5)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= saved["test/ndcg@10"] <= 1.0 and "bm25/test/ndcg@10" in saved
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "config.yaml").exists()


def test_tau_mask_with_a_larger_tau_masks_more(dataset, tmp_path):
    _, _, history = _train(dataset, tmp_path, "weight=tau_mask", "weight.tau=0.5")
    # an untrained model has p_yes near 0.5: with tau = 0.5 about half the pairs are masked
    assert 0.0 < max(float(r["masked_fraction"]) for r in history) < 1.0


@pytest.mark.parametrize(
    "overrides",
    [
        ["head.num_tokens=4"],  # expanded token set (Figure 4)
        ["head.trainable=true"],  # trainable LM head rows (Table 15)
        ["weight=cl", "direction=cl", "weight.dtype=float16"],  # fp16 weights (Table 5)
        ["train.accumulate=2", "train.queries_per_step=2"],
        ["train.chunk_size=2", "weight=cl", "direction=cl"],  # constant-memory step
        ["train.gradient_checkpointing=true"],
        ["model.dtype=bfloat16"],  # bf16 frozen backbone
    ],
    ids=["4-tokens", "trainable-head", "fp16-weights", "accumulation", "chunked", "grad-checkpointing", "bf16-backbone"],
)
def test_probing_settings_train_end_to_end(dataset, tmp_path, overrides):
    run_dir, metrics, history = _train(dataset, tmp_path, *overrides)
    assert len(history) == 3 and all(math.isfinite(float(r["loss"])) for r in history)
    if "train.accumulate=2" in overrides:
        # 2 micro-batches of 2 queries per optimizer step
        assert [int(r["items_consumed"]) for r in history] == [4, 8, 12]


@pytest.mark.parametrize("task", ["emoji_t2i", "emoji_i2t"])
def test_vision_language_model_trains_and_evaluates_on_emoji(tmp_path, task):
    """The image path end to end: tiny Qwen2.5-VL, real emoji pictures, the same loss and logs."""
    cfg = compose_train(
        "data/emoji", "model=tiny_vl", f"data={task}", "data.n_negatives=4",
        "eval.test_queries=6", "weight=cl", "direction=sft",
    )  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    history = _history(tmp_path / "run")
    assert [int(r["step"]) for r in history] == [1, 2, 3]
    for key in LOGGED:
        assert math.isfinite(float(history[-1][key])), key
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0 and "pool/test/ndcg@10" in metrics


def test_float16_with_a_loss_scaler_clips_unscaled_gradients_and_leaves_overflows_to_the_scaler(
        dataset, tmp_path, monkeypatch):
    # 16-mixed (GPUs without bf16: V100, T4) scales the loss; Lightning unscales the gradients
    # only inside optimizer.step(), just before on_before_optimizer_step. Lightning swaps 16-mixed
    # for bf16-mixed on a CPU, so its float16 plugin is put in by hand here, with an initial
    # scale of 2^20 that overflows float16 for the first steps (inf gradients: the scaler's
    # business, not a fault of train.nonfinite=stop).
    import lightning
    import torch
    from lightning.pytorch.plugins.precision import MixedPrecision

    scalers, norms = [], []

    def trainer_with_scaler(*args, **kwargs):
        kwargs.pop("precision", None)
        scalers.append(torch.amp.GradScaler("cpu", init_scale=2.0**20))
        kwargs["plugins"] = [*kwargs.get("plugins", []), MixedPrecision("16-mixed", "cpu", scaler=scalers[-1])]
        return real_trainer(*args, **kwargs)

    def recording_step(self, *args, **kwargs):  # the gradients AdamW steps with
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for group in self.param_groups for p in group["params"] if p.grad is not None]))))
        return real_step(self, *args, **kwargs)

    real_trainer, real_step = lightning.Trainer, torch.optim.AdamW.step
    monkeypatch.setattr(lightning, "Trainer", trainer_with_scaler)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    clip = 1e-3
    run_dir, _, history = _train(dataset, tmp_path, "train.max_steps=12", f"train.grad_clip={clip}")
    assert [int(r["step"]) for r in history] == list(range(1, 13))
    assert scalers[-1].get_scale() < 2.0**20  # the fit's scaler (the first trainer only probes the launch) backed off
    assert norms and len(norms) < 12  # the overflowing steps were skipped by the scaler, not by the guard
    assert all(clip * 0.5 < norm <= clip * 1.001 for norm in norms), norms  # clipped after unscaling
    assert (run_dir / "metrics.json").exists()


def test_the_gpu_trainers_mixed_precision_trains_with_clipping_and_the_fused_optimizer(dataset, tmp_path):
    # trainer=gpu is bf16-mixed: Lightning's AMP plugin refuses to clip for a fused optimizer (one
    # that unscales itself), though bf16 has no loss scale. The same plugin runs here on the CPU.
    run_dir, _, history = _train(dataset, tmp_path, "trainer.precision=bf16-mixed", "train.grad_clip=1e-3")
    assert [int(r["step"]) for r in history] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) for r in history)
    assert (run_dir / "metrics.json").exists()
