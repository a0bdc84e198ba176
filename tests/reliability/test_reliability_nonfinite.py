"""Non-finite steps: caught at the step, handled by train.nonfinite, never checkpointed.

The fault is injected where it would really come from: the scores of one chosen query's
prompts (a degenerate input, an overflowing half-precision backbone), a score too large for
a float16 weight (paper Table 5's precision setting), or an optimizer update that overflows
a parameter. Each test trains the tiny model in-process for a few steps.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.build import load_data_split
from urlkit.data.groups import TrainGroups
from urlkit.data.stream import GroupStream
from urlkit.model.scoring import Reranker
from urlkit.train import train
from urlkit.training.nonfinite import NonFiniteError, NonFiniteGuard

FAST = ["eval.test_queries=2"]  # the final evaluation is not what these tests are about


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("nonfinite") / "small")


def query_at_step(cfg, step: int):
    """The training query of optimizer step ``step`` (one query per step, first epoch)."""
    split = load_data_split(cfg.data, cfg.data.train_split)
    order = GroupStream(TrainGroups(split, None, cfg.data.n_negatives), seed=cfg.seed).permutation(0)
    return split.queries[order[step - 1]]


@pytest.fixture
def poison(monkeypatch, smollm2_tokenizer):
    """``poison(text, value)``: training scores of prompts containing ``text`` become ``value``."""

    def install(text: str, value: float, column: int | None = None):
        forward = Reranker.forward

        def poisoned(self, batch):
            logits = forward(self, batch)
            if not self.training:
                return logits
            prompts = smollm2_tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
            hit = torch.tensor([text in prompt for prompt in prompts])
            poisoned = logits.clone()
            poisoned[hit, slice(None) if column is None else column] = value
            return poisoned

        monkeypatch.setattr(Reranker, "forward", poisoned)

    return install


def checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def all_finite(state_dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


def rows(run_dir):
    import csv

    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_stop_names_the_step_and_the_query_and_checkpoints_only_finite_steps(dataset, tmp_path, poison):
    cfg = compose_train(dataset, *FAST, "train.nonfinite=stop", "checkpoint.every_n_steps=1")
    target = query_at_step(cfg, 2)
    poison(target.text, float("nan"))
    with pytest.raises(NonFiniteError) as raised:
        train(cfg, tmp_path / "run")
    message = str(raised.value)
    assert "non-finite score" in message and "optimizer step 2" in message
    assert f"queries: {target.id}." in message and "train.nonfinite=skip" in message
    assert [r["step"] for r in rows(tmp_path / "run")] == ["1"]
    saved = checkpoint(tmp_path / "run")
    assert saved["global_step"] == 1 and all_finite(saved["state_dict"])  # step 2 never saved
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and target.id in info["error"]


def test_skip_drops_the_step_counts_it_and_trains_on(dataset, tmp_path, poison):
    cfg = compose_train(dataset, *FAST, "train.nonfinite=skip", "checkpoint.every_n_steps=1")
    target = query_at_step(cfg, 2)
    poison(target.text, float("inf"), column=1)  # only the "no" column: one inf score per prompt
    metrics = train(cfg, tmp_path / "run")
    history = rows(tmp_path / "run")
    assert [r["step"] for r in history] == ["1", "2", "3"]  # max_steps finite steps
    assert [r["skipped_steps"] for r in history] == ["0", "1", "1"]
    assert [r["items_consumed"] for r in history] == ["1", "3", "4"]  # the skipped group was consumed
    assert all(float(r["loss"]) == float(r["loss"]) for r in history)
    saved = checkpoint(tmp_path / "run")
    assert saved["urlkit"]["skipped_steps"] == 1 and all_finite(saved["state_dict"])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished" and info["skipped_steps"] == 1
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0


def test_a_float16_weight_overflow_is_caught_although_every_score_is_finite(dataset, tmp_path, poison):
    """Table 5's setting: a CL weight computed in float16 from a score above 65504."""
    cfg = compose_train(dataset, *FAST, "weight=cl", "direction=cl", "weight.dtype=float16")
    target = query_at_step(cfg, 1)
    poison(target.text, 7e4, column=0)  # finite in float32, inf in float16
    with pytest.raises(NonFiniteError, match=r"non-finite weight W\+ \(.*\) at optimizer step 1; queries: " + target.id):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_skip_gives_up_when_every_step_fails(dataset, tmp_path, poison):
    cfg = compose_train(dataset, *FAST, "train.nonfinite=skip", "train.max_consecutive_skips=4")
    poison("", float("nan"))  # every prompt: the model itself is broken
    with pytest.raises(NonFiniteError, match="4 optimizer steps in a row were non-finite"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "history.csv").exists() or rows(tmp_path / "run") == []


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_an_update_that_overflows_the_parameters_stops_before_its_checkpoint(dataset, tmp_path, monkeypatch, policy):
    step = torch.optim.AdamW.step

    def overflowing_step(self, *args, **kwargs):  # as a float16 parameter past 65504 would
        result = step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing_step)
    cfg = compose_train(dataset, *FAST, f"train.nonfinite={policy}", "checkpoint.every_n_steps=1")
    with pytest.raises(NonFiniteError, match="the update of optimizer step 1 made parameters non-finite"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "both-infinities"])
def test_the_gradient_flag_sees_any_non_finite_entry_in_any_tensor(bad):
    # one float32 sum a tensor: NaN and either infinity show, and +inf with -inf sums to NaN
    params = [torch.nn.Parameter(torch.ones(4, 3)) for _ in range(5)] + [torch.nn.Parameter(torch.ones(2))]
    for p in params:
        p.grad = torch.randn_like(p)
    assert NonFiniteGuard.gradient_flag(params).tolist() == [0.0]
    if bad == "both-infinities":
        params[3].grad[1, 2], params[3].grad[0, 0] = float("inf"), -float("inf")
    else:
        params[3].grad[1, 2] = bad
    assert NonFiniteGuard.gradient_flag(params).tolist() == [1.0]
    params[3].grad = None  # a parameter without a gradient is not looked at
    assert NonFiniteGuard.gradient_flag(params).tolist() == [0.0]


def test_the_guard_checks_gradients_and_names_bad_queries_only():
    guard = NonFiniteGuard("skip")
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([0.0, float("nan"), 1.0])
    assert guard.gradients([p], step=7, query_ids=["a"]) is False
    with pytest.raises(NonFiniteError, match="non-finite gradient at optimizer step 7; queries: a, b"):
        NonFiniteGuard("stop").gradients([p], step=7, query_ids=["a", "b"])
    # per-query tensors name only the queries whose numbers are bad
    logits = torch.zeros(3, 3, 2)
    logits[1, 2, 0] = float("inf")
    mask = torch.ones(3, 3, dtype=torch.bool)
    info = {"w_pos": torch.zeros(3), "w_neg": torch.zeros(3, 2)}
    with pytest.raises(NonFiniteError, match=r"score \(1 inf\) at optimizer step 1; queries: q1\."):
        NonFiniteGuard("stop").scores_and_loss(logits, torch.tensor(0.0), info, mask, step=1, query_ids=["q0", "q1", "q2"])
    # a padded negative's weight is not a fault, whatever it holds
    mask[2, 2] = False
    info["w_neg"][2, 1] = float("nan")
    assert NonFiniteGuard("stop").scores_and_loss(torch.zeros(3, 3, 2), torch.tensor(0.0), info, mask, step=1, query_ids=["q0", "q1", "q2"])
