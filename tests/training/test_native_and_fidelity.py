"""Native losses through the same step (Figure 2) and the fidelity fixes of issue 17.

- ``python -m urlkit.run +objective=native_sft`` trains with the native SFT loss and logs the
  same per-step columns as URL(sft, sft); with one seed the two follow the same curve (same
  gradient), and the logged loss is the native loss.
- ``direction=rand`` takes its form from the weight (cl: one learned score) and its projection
  from the run seed; the token-set finder samples random training instances, positives and
  negatives; fp16/bf16 weight underflow is counted per step; random negatives come from the
  corpus with ``data.random_from=corpus``.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.build import check_direction, token_sample_instances
from urlkit.config_checks import check_train_config, temperature_note
from urlkit.data import Query, query_rng, sample_negatives
from urlkit.data.loaders import load_split
from urlkit.errors import ConfigError
from urlkit.loss import WeightOptions, infonce_loss, relevance, url_loss
from urlkit.paths import REPO_ROOT
from urlkit.training.telemetry import underflow_counts

TINY = ["model=tiny", "logger=none", "train.max_steps=4", "train.warmup_steps=1", "eval.every_n_steps=0",
        "eval.test_queries=3", "eval.depth=6", "eval.batch_size=6", "checkpoint.every_n_steps=100",
        "data.n_negatives=3", "model.lora.dropout=0", "++trainer.enable_progress_bar=false"]  # fmt: skip


def _train_cli(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    out = subprocess.run(
        [sys.executable, "-m", "urlkit.run", *TINY, f"data.path={tmp_path / 'data'}",
         f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, timeout=280, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return pd.read_csv(run_dir / "history.csv")


def test_native_sft_trains_through_the_entry_point_with_urls_columns(tmp_path):
    write_small_dataset(tmp_path / "data")
    native = _train_cli(tmp_path, "native", "+objective=native_sft")
    url = _train_cli(tmp_path, "url", "+objective=sft")
    assert list(native.columns) == list(url.columns) and len(native) == len(url) == 4
    for column in ("w_underflow_fp16", "w_underflow_bf16"):  # shares of the step's real pairs
        assert column in native.columns and native[column].between(0, 1).all()
    # the logged loss is the native loss itself, not URL's surrogate
    assert native["loss"].to_numpy() == pytest.approx(
        native["loss_sft_native"].to_numpy(), rel=1e-5
    )
    assert not url["loss"].to_numpy() == pytest.approx(url["loss_sft_native"].to_numpy(), rel=1e-3)
    # same seed, same data, same gradient: the same native-loss curve (float rounding apart)
    assert native["loss_sft_native"].to_numpy() == pytest.approx(
        url["loss_sft_native"].to_numpy(), rel=1e-3
    )


def test_native_loss_needs_its_own_weight_and_direction(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    check_train_config(compose_train(data, "+objective=native_infonce"))
    with pytest.raises(ConfigError, match="loss=native_sft trains with weight=sft direction=sft"):
        check_train_config(compose_train(data, "loss=native_sft", "weight=cl"))
    with pytest.raises(ConfigError, match="loss='hinge' is not one of"):
        check_train_config(compose_train(data, "loss=hinge"))


def test_a_cl_temperature_other_than_one_is_said_with_its_factor_to_infonce(tmp_path):
    """URL keeps W_cl a probability: at T, URL(cl, cl)'s gradient is T times InfoNCE's, which
    a Figure 2 comparison at T != 1 would otherwise read as a difference of the objectives."""
    data = write_small_dataset(tmp_path / "data")
    assert temperature_note(compose_train(data, "weight=cl")) is None
    assert temperature_note(compose_train(data, "weight=sft", "weight.temperature=0.05")) is None
    note = temperature_note(compose_train(data, "+objective=native_infonce", "weight.temperature=0.05"))
    assert note.startswith("weight.temperature=0.05: URL(cl, cl)'s gradient is 0.05 times native InfoNCE's")
    logits = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    url, _ = url_loss(logits, weight="cl", direction="cl", temperature=0.05)
    (url_grad,) = torch.autograd.grad(url, logits)
    (native_grad,) = torch.autograd.grad(infonce_loss(logits, temperature=0.05), logits)
    assert torch.allclose(url_grad, 0.05 * native_grad, atol=1e-12)  # the factor the note names


def test_random_direction_form_follows_the_weight_and_its_seed_the_run(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    cl = compose_train(data, "weight=cl", "direction=rand", "seed=3")
    assert check_direction(cl) == "rand_cl" and cl.direction.seed == 3
    assert check_direction(compose_train(data, "weight=sft", "direction=rand")) == "rand"
    assert (
        check_direction(compose_train(data, "weight=cl", "direction=rand", "direction.form=sft"))
        == "rand"
    )
    logits = torch.randn(2, 4, 2)
    # the cl form: one learned score, which the cl weight softmaxes over the documents
    assert torch.equal(relevance(logits, "rand_cl"), logits[..., 0])
    _, info = url_loss(logits, weight="cl", direction="rand_cl")
    assert torch.allclose(info["w_neg"], logits[..., 0].softmax(dim=1)[:, 1:])


def test_token_set_instances_are_random_positives_and_negatives_seeded_by_the_run(tmp_path):
    split = load_split(write_small_dataset(tmp_path / "data"), "train")
    first = token_sample_instances(split, 64, seed=0)
    assert (
        first
        == token_sample_instances(split, 64, seed=0)
        != token_sample_instances(split, 64, seed=1)
    )
    positives = [doc in q.positives for q, doc in first]
    assert 0.25 < sum(positives) / len(positives) < 0.75
    assert len({q.id for q, _ in first}) == len(split.queries)  # not the file's first queries only


def test_underflow_counts_the_weights_half_precision_loses():
    logits = torch.zeros(1, 5, 2)
    logits[0, 0, 0] = 40.0  # the positive's yes-logit dwarfs the negatives': cl weights ~ e^-40
    everything = torch.ones(1, 5, dtype=torch.bool)
    counts = underflow_counts(WeightOptions("cl"), logits, everything)
    assert counts["fp16"] >= 4 and counts["bf16"] == 0  # bf16 has float32's range
    mild = underflow_counts(WeightOptions("cl"), torch.zeros(1, 5, 2), everything)
    assert float(mild["fp16"]) == float(mild["bf16"]) == 0.0


def test_random_negatives_from_the_corpus_leave_the_pool():
    corpus = [f"d{i}" for i in range(500)]
    query = Query(id="q", text="t", qrels={"d0": 1}, candidates=["d0", "d1", "d2", "d3"])
    pooled = sample_negatives(query, None, corpus, 16, hard_fraction=0.0, rng=query_rng(0, 0, "q"))
    assert set(pooled) <= {"d1", "d2", "d3"}  # the pool runs out: 3 real negatives of 16
    wide = sample_negatives(query, None, corpus, 16, hard_fraction=0.0, rng=query_rng(0, 0, "q"),
                            random_from="corpus")  # fmt: skip
    assert len(set(wide)) == 16 and "d0" not in wide
