"""URL reproduces the gradients of the native losses, and its weights carry no gradient."""

import itertools

import pytest
import torch

from urlkit.loss import compute_weight, infonce_loss, relevance, sft_loss, url_loss

F64 = torch.float64
SHAPES = list(itertools.product([1, 3], [1, 4, 16], [2, 4]))  # (B, N, K)


def random_logits(batch, negatives, columns, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch, 1 + negatives, columns, generator=generator, dtype=F64)
    return logits.requires_grad_()


def padding_mask(batch, negatives, seed):
    """Each example keeps a random number (0..N) of real negatives."""
    generator = torch.Generator().manual_seed(seed)
    kept = torch.randint(0, negatives + 1, (batch,), generator=generator)
    kept[0] = max(negatives - 1, 0)  # at least one example really padded when N > 1
    return torch.arange(1 + negatives)[None, :] <= kept[:, None]


def grad(loss, logits):
    (gradient,) = torch.autograd.grad(loss, logits)
    return gradient


def url_grad(logits, weight, direction, mask=None, **options):
    # the default call, no weight_dtype: float64 logits must give float64 weights by themselves
    loss, _ = url_loss(logits, weight, direction, mask, **options)
    return grad(loss, logits)


@pytest.mark.parametrize(("batch", "negatives", "columns"), SHAPES)
@pytest.mark.parametrize("padded", [False, True])
def test_url_sft_sft_has_the_gradient_of_k_way_sft(batch, negatives, columns, padded):
    logits = random_logits(batch, negatives, columns, seed=batch * 100 + negatives * 10 + columns)
    mask = padding_mask(batch, negatives, seed=negatives) if padded else None
    expected = grad(sft_loss(logits, mask), logits)
    torch.testing.assert_close(url_grad(logits, "sft", "sft", mask), expected, rtol=0, atol=1e-12)
    # rand is the sft form on another head's logits: same function in the loss
    torch.testing.assert_close(url_grad(logits, "sft", "rand", mask), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("batch", "negatives", "columns"), SHAPES)
@pytest.mark.parametrize("padded", [False, True])
def test_url_cl_cl_has_the_gradient_of_infonce(batch, negatives, columns, padded):
    logits = random_logits(batch, negatives, columns, seed=7 + batch + negatives + columns)
    mask = padding_mask(batch, negatives, seed=negatives + 1) if padded else None
    expected = grad(infonce_loss(logits, mask), logits)
    torch.testing.assert_close(url_grad(logits, "cl", "cl", mask), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_infonce_with_temperature_is_url_cl_scaled_by_one_over_t(temperature):
    logits = random_logits(3, 4, 2, seed=11)
    expected = grad(infonce_loss(logits, temperature=temperature), logits)
    got = url_grad(logits, "cl", "cl", temperature=temperature) / temperature
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_padded_negatives_receive_no_gradient():
    logits = random_logits(3, 4, 4, seed=3)
    mask = padding_mask(3, 4, seed=5)
    for weight, direction in [
        ("sft", "sft"),
        ("cl", "cl"),
        ("tau_mask*sft", "cl"),
        ("base", "sft"),
    ]:
        gradient = url_grad(logits, weight, direction, mask)
        assert gradient[~mask].abs().max() == 0, (weight, direction)
        assert gradient[mask].abs().max() > 0, (weight, direction)


def test_weights_carry_no_gradient():
    logits = random_logits(2, 4, 3, seed=21)
    for weight in ["sft", "cl", "base", "tau_mask", "base*sft"]:
        w_pos, w_neg = compute_weight(weight, logits)
        assert not w_pos.requires_grad and not w_neg.requires_grad
        _, info = url_loss(logits, weight, "cl")
        assert not any(value.requires_grad for value in info.values())


@pytest.mark.parametrize("weight", ["sft", "cl", "base*sft"])
def test_gradient_flows_only_through_the_direction(weight):
    """The URL gradient is that of sum W * r with W frozen; letting the gradient run
    through the weights as well gives a different one (so this test can fail)."""
    logits = random_logits(2, 4, 2, seed=4)
    got = url_grad(logits, weight, "sft")

    w_pos, w_neg = compute_weight(weight, logits, weight_dtype=F64)
    r = relevance(logits, "sft")  # K = 2: r is s_yes - s_no on both sides
    surrogate = (-w_pos * r[:, 0] + (w_neg * r[:, 1:]).sum(-1)).mean()
    torch.testing.assert_close(got, grad(surrogate, logits), rtol=0, atol=1e-12)

    # the same weight kept on the graph: perturbing the scores through W moves the gradient
    r = relevance(logits, "sft")
    p_yes = logits.softmax(-1)[..., 0]
    if weight == "cl":
        c = logits[..., 0].softmax(-1)
        live_pos, live_neg = 1 - c[:, 0], c[:, 1:]
    else:
        live_pos, live_neg = 1 - p_yes[:, 0], p_yes[:, 1:]
        if weight == "base*sft":
            live_neg = live_neg * (p_yes[:, 1:] / 0.05).softmax(-1)
    live = (-live_pos * r[:, 0] + (live_neg * r[:, 1:]).sum(-1)).mean()
    assert (grad(live, logits) - got).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_train_like_float32(dtype):
    """Mixed-precision training: the loss is computed in float32 and the gradient comes back
    in the logits' dtype, close to the float32 one."""
    logits = random_logits(3, 4, 2, seed=9).detach()
    half = logits.to(dtype).requires_grad_()
    single = half.detach().float().requires_grad_()
    loss_half, _ = url_loss(half, "base*sft", "sft", weight_dtype=dtype)
    loss_single, _ = url_loss(single, "base*sft", "sft")
    assert loss_half.dtype == torch.float32
    gradient = grad(loss_half, half)
    assert gradient.dtype == dtype and torch.isfinite(gradient).all()
    torch.testing.assert_close(gradient.float(), grad(loss_single, single), rtol=0, atol=2e-2)
