"""Per-step statistics: the weights that trained, the counterfactual ones, and accumulation."""

import math

import pytest
import torch
from helpers.host_waits import HostWaits

from urlkit.loss import WeightOptions, compute_weight, url_loss
from urlkit.training.telemetry import StepAccumulator, step_statistics

OPTIONS = WeightOptions("sft", torch.float32)


def _batch(seed=0, b=3, n=4, k=2):
    logits = torch.randn(b, 1 + n, k, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(b, 1 + n, dtype=torch.bool)
    mask[0, -2:] = False  # the first example has only 2 real negatives
    return logits, mask


def test_counterfactual_weights_are_the_other_families_on_the_same_scores():
    logits, mask = _batch()
    loss, info = url_loss(logits, weight="sft", direction="cl", mask=mask)
    stats = step_statistics(logits, loss, info, mask, OPTIONS)
    for family in ("sft", "cl", "base"):
        w_pos, w_neg = compute_weight(family, logits, mask, weight_dtype=torch.float32)
        assert stats[f"w_{family}_pos"] == pytest.approx(w_pos.mean().item())
        assert stats[f"w_{family}_neg"] == pytest.approx(w_neg[mask[:, 1:]].mean().item())
    # the trained weight is sft, so its statistics are the sft family's
    assert stats["w_pos_mean"] == pytest.approx(stats["w_sft_pos"])
    assert stats["w_neg_mean"] == pytest.approx(stats["w_sft_neg"])
    # padded negatives are excluded from min/max (their weight is 0)
    assert stats["w_neg_min"] == pytest.approx(info["w_neg"][mask[:, 1:]].min().item())


def test_accumulation_averages_means_and_keeps_extremes():
    acc = StepAccumulator()
    rows = []
    for seed in range(3):
        logits, mask = _batch(seed)
        loss, info = url_loss(logits, weight="cl", direction="cl", mask=mask)
        rows.append(step_statistics(logits, loss, info, mask, OPTIONS))
        acc.add(logits, loss, info, mask, [f"q{seed}"], OPTIONS)
    step = acc.finish()
    assert step["loss"] == pytest.approx(sum(r["loss"] for r in rows) / 3)
    assert step["w_pos_min"] == min(r["w_pos_min"] for r in rows)
    assert step["w_neg_max"] == max(r["w_neg_max"] for r in rows)
    assert step["loss"] != pytest.approx(rows[-1]["loss"])  # not just the last micro-batch
    assert acc.query_ids == ["q0", "q1", "q2"]


def test_micro_batches_and_ranks_log_exactly_the_row_of_one_batch_with_all_their_queries():
    """Counts, not means of means: micro-batches with different padding (and the same split
    over ranks, whose sums are added by ``reduce``) give the row of the concatenated batch."""
    first, second = _batch(1, b=2, n=4), _batch(2, b=3, n=4)
    second[1][:, 2:] = (
        False  # the second micro-batch has 1 real negative per query, the first 4 or 2
    )
    whole = (torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]))
    loss, info = url_loss(*whole[:1], weight="sft", direction="sft", mask=whole[1])
    reference = step_statistics(whole[0], loss, info, whole[1], OPTIONS)

    acc = StepAccumulator()
    for logits, mask in (first, second):
        loss, info = url_loss(logits, weight="sft", direction="sft", mask=mask)
        acc.add(logits, loss, info, mask, [], OPTIONS)
    assert acc.finish() == pytest.approx(reference, rel=1e-6)

    # two "ranks": each holds one micro-batch; gather brings the other rank's packed vector
    ranks = []
    for logits, mask in (first, second):
        one = StepAccumulator()
        loss, info = url_loss(logits, weight="sft", direction="sft", mask=mask)
        one.add(logits, loss, info, mask, [], OPTIONS)
        ranks.append(one)
    packed = []

    def capture(vector):
        packed.append(vector.clone())
        return vector[None]

    ranks[1].finish(torch.zeros(1), gather=capture)  # rank 1's contribution
    row, flags = ranks[0].finish(torch.tensor([1.0]), gather=lambda vector: torch.stack([vector, *packed]))
    assert row == pytest.approx(reference, rel=1e-6) and flags == [1.0]


def test_a_micro_batchs_row_is_the_plain_statistics_of_its_real_pairs():
    """Every column against a plain computation over the real pairs (padded negatives left
    out), including a micro-batch whose negatives are all padded (its w_neg_* are NaN) and
    the histograms' negatives. Guards the values when the sums change how they are built."""
    logits, mask = _batch(3, b=4, n=3)
    mask[1, 2:] = False
    loss, info = url_loss(logits, weight="cl", direction="cl", mask=mask)
    acc = StepAccumulator()
    acc.add(logits, loss, info, mask, ["a", "b", "c", "d"], WeightOptions("cl", torch.float32))
    row = acc.finish()
    real = mask[:, 1:]
    p_yes = logits.softmax(-1)[..., 0]
    best_negative = info["scores"][:, 1:].masked_fill(~real, float("-inf")).max(dim=1).values
    expected = {
        "loss": loss.item(),
        "w_pos_mean": info["w_pos"].mean().item(), "w_pos_min": info["w_pos"].min().item(),
        "w_pos_max": info["w_pos"].max().item(),
        "w_neg_mean": info["w_neg"][real].mean().item(), "w_neg_min": info["w_neg"][real].min().item(),
        "w_neg_max": info["w_neg"][real].max().item(),
        "masked_fraction": info["masked_fraction"].item(),
        "r_pos": info["r_pos"].mean().item(), "r_neg": info["r_neg"][real].mean().item(),
        "p_yes_pos": p_yes[:, 0].mean().item(), "p_yes_neg": p_yes[:, 1:][real].mean().item(),
        "pairwise_accuracy": (info["scores"][:, 0] > best_negative).float().mean().item(),
    }  # fmt: skip
    assert {key: row[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    assert torch.equal(torch.cat(acc.w_neg), info["w_neg"][real])

    no_negatives = mask.clone()
    no_negatives[:, 1:] = False
    loss, info = url_loss(logits, weight="cl", direction="cl", mask=no_negatives)
    row = step_statistics(logits, loss, info, no_negatives, OPTIONS)
    assert all(math.isnan(row[key]) for key in ("w_neg_mean", "w_neg_min", "w_neg_max", "r_neg"))
    assert row["w_pos_min"] == pytest.approx(info["w_pos"].min().item())


def test_adding_a_micro_batch_makes_nothing_the_host_waits_for():
    """On CUDA each of these is a host sync: ``torch.tensor(count, device=...)`` (a copy from
    the host), ``w_neg[mask]`` (a selection, whose size the host waits for). The accumulator
    made 4 of them per micro-batch (the query count, +inf, the real negatives' extremes and
    the histograms' negatives); the step's one read is :meth:`StepAccumulator.finish`'s."""
    logits, mask = _batch(4)
    loss, info = url_loss(logits, weight="sft", direction="cl", mask=mask)
    acc = StepAccumulator()
    with HostWaits("training/telemetry.py") as waits:
        acc.add(logits, loss, info, mask, ["q"], OPTIONS)
        acc.add(logits, loss, info, mask, ["q"], OPTIONS)
    assert waits.found == []


def test_a_training_step_reads_the_device_back_twice_whatever_the_accumulation(tmp_path, monkeypatch):
    """Host syncs (item, tolist, bool, float, int, numpy of a tensor) made by urlkit.training
    inside the training step: the step's telemetry and non-finite verdicts (one ``tolist``),
    and the check of the updated parameters (one ``item``). Was ~50 for the telemetry and
    ~60 for the guard per step of the tiny model (4 micro-batch checks, 1 per gradient and 1
    per parameter)."""
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.train import train
    from urlkit.training.module import RerankerModule

    counted = {"syncs": 0, "steps": 0, "inside": False}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if counted["inside"] and _called_from_training_code():
                counted["syncs"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    step, optimizer_step = RerankerModule.training_step, RerankerModule._optimizer_step

    def training_step(self, *args, **kwargs):
        counted["inside"] = True
        try:
            return step(self, *args, **kwargs)
        finally:
            counted["inside"] = False

    def counted_optimizer_step(self):
        counted["steps"] += 1
        return optimizer_step(self)

    monkeypatch.setattr(RerankerModule, "training_step", training_step)
    monkeypatch.setattr(RerankerModule, "_optimizer_step", counted_optimizer_step)
    data = write_small_dataset(tmp_path / "data")
    train(compose_train(data, "train.accumulate=2", "eval.test_queries=2"), tmp_path / "run")
    assert counted["steps"] == 3
    assert counted["syncs"] == 2 * counted["steps"]


def _called_from_training_code() -> bool:
    """The read is made by code in urlkit/training/ itself (not by the optimizer's own scalar
    reads on CPU, nor by the loss's input checks or the scorer)."""
    import sys

    return "/urlkit/training/" in sys._getframe(2).f_code.co_filename.replace("\\", "/")


def test_log_every_n_steps_writes_every_nth_step_to_the_history(tmp_path):
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.train import train

    data = write_small_dataset(tmp_path / "data")
    train(compose_train(data, "train.max_steps=4", "log.every_n_steps=2", "eval.test_queries=2"), tmp_path / "run")
    import csv

    with (tmp_path / "run" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["2", "4"] and [r["items_consumed"] for r in rows] == ["2", "4"]
