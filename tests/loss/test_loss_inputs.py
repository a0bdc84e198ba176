"""Bad input fails early with a message that says what was expected."""

import pytest
import torch

from urlkit.loss import LossInputError, compute_weight, infonce_loss, sft_loss, url_loss

LOGITS = torch.zeros(2, 3, 2)


@pytest.mark.parametrize("loss", [url_loss, sft_loss, infonce_loss])
def test_logits_must_be_three_dimensional(loss):
    with pytest.raises(LossInputError, match=r"\(B, 1\+N, K\).*got \(6, 2\) \(2-D\)"):
        loss(torch.zeros(6, 2))


def test_logits_need_a_yes_and_a_no_column():
    with pytest.raises(LossInputError, match="K >= 2"):
        url_loss(torch.zeros(2, 3, 1))


def test_logits_must_be_floating_point():
    with pytest.raises(LossInputError, match="floating point"):
        sft_loss(torch.zeros(2, 3, 2, dtype=torch.long))
    with pytest.raises(LossInputError, match="torch.Tensor"):
        url_loss([[[0.0, 0.0]]])


def test_mask_shape_must_match_the_documents():
    with pytest.raises(LossInputError, match=r"mask shape \(2, 4\).*\(2, 3\)"):
        url_loss(LOGITS, mask=torch.ones(2, 4, dtype=torch.bool))


def test_mask_must_be_boolean():
    with pytest.raises(LossInputError, match="bool tensor.*mask.bool"):
        infonce_loss(LOGITS, mask=torch.ones(2, 3))


def test_mask_may_not_hide_a_positive():
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 0] = False
    with pytest.raises(LossInputError, match=r"hides the positive .* example\(s\) \[1\]"):
        compute_weight("cl", LOGITS, mask)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"beta": -0.05}, "beta must be > 0"),
        ({"tau": 1.5}, r"tau must be in \[0, 1\]"),
        ({"weight_dtype": torch.int32}, "weight_dtype must be a floating"),
    ],
)
def test_hyper_parameters_out_of_range(options, message):
    with pytest.raises(LossInputError, match=message):
        url_loss(LOGITS, "cl", "cl", **options)


def test_errors_are_value_errors():
    assert issubclass(LossInputError, ValueError)


def test_on_an_accelerator_the_mask_check_makes_the_host_wait_for_nothing(monkeypatch):
    """The losses run ~10 times a training step (the loss, the telemetry's native losses and
    weights); on a GPU each read of the mask back to the host (``nonzero().tolist()``) waited
    for the step's queued forward pass. Off the CPU the check runs on the device instead: the
    losses' own lines make no host wait, and a hidden positive still fails, with the message."""
    from helpers.host_waits import HostWaits

    from urlkit.loss import DIRECTIONS, WEIGHTS, inputs

    monkeypatch.setattr(inputs, "reads_back_freely", lambda device: False, raising=False)
    logits = torch.randn(3, 5, 2, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False  # padded negatives
    for weight in WEIGHTS:
        for direction in DIRECTIONS:
            with HostWaits("loss/") as waits:
                loss, _ = url_loss(logits, weight=weight, direction=direction, mask=mask)
                loss.backward()
                sft_loss(logits, mask)
                infonce_loss(logits, mask=mask)
            assert waits.found == [], (weight, direction)
    mask[2, 0] = False
    with pytest.raises(RuntimeError, match=r"url_loss: mask hides the positive \(document 0\) of an example"):
        url_loss(logits, mask=mask)
