"""Each weight against numbers computed by hand from a tiny example, composition, padding,
temperature/beta and the precision the weights are computed in."""

import inspect
import math

import pytest
import torch

from urlkit.loss import WEIGHTS, LossInputError, compute_weight, parse_weight, url_loss
from urlkit.loss.weights import weight_dtype_for

F64 = torch.float64


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


# one example, positive + 2 negatives, K = 2: (s_yes, s_no) per document
TINY = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=F64)
P_YES = [sigmoid(2.0), sigmoid(-1.0), sigmoid(0.0)]  # p_yes = sigmoid(s_yes - s_no)


def weights(spec, logits=TINY, mask=None, **options):
    options.setdefault("weight_dtype", F64)
    return compute_weight(spec, logits, mask, **options)


def assert_weights(got, w_pos, w_neg, tol=1e-12):
    torch.testing.assert_close(got[0], torch.as_tensor(w_pos, dtype=F64), rtol=0, atol=tol)
    torch.testing.assert_close(got[1], torch.as_tensor(w_neg, dtype=F64), rtol=0, atol=tol)


def test_sft_weight_by_hand():
    assert_weights(weights("sft"), [1 - P_YES[0]], [[P_YES[1], P_YES[2]]])


def test_sft_weight_with_four_tokens_is_one_minus_the_label_probability():
    logits = torch.tensor([[[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 1.0, -2.0]]], dtype=F64)
    p_pos, p_neg = softmax([1.0, 0.0, -1.0, 0.5]), softmax([0.0, 2.0, 1.0, -2.0])
    assert_weights(weights("sft", logits), [1 - p_pos[0]], [[1 - p_neg[1]]])


def test_cl_weight_by_hand_and_positive_weight_is_the_sum_of_negative_weights():
    c = softmax([2.0, 0.0, 1.0])  # softmax of the yes logits over the documents
    got = weights("cl")
    assert_weights(got, [1 - c[0]], [[c[1], c[2]]])
    torch.testing.assert_close(got[0], got[1].sum(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 3.0])
def test_cl_temperature_divides_the_yes_logits(temperature):
    c = softmax([2.0 / temperature, 0.0, 1.0 / temperature])
    assert_weights(weights("cl", temperature=temperature), [1 - c[0]], [[c[1], c[2]]])


def test_base_weight_by_hand():
    w = softmax([P_YES[1] / 0.05, P_YES[2] / 0.05])
    assert_weights(weights("base"), [1.0], [w])


@pytest.mark.parametrize("beta", [0.01, 0.3, 10.0])
def test_base_beta_is_the_temperature_over_negatives(beta):
    w = softmax([P_YES[1] / beta, P_YES[2] / beta])
    assert_weights(weights("base", beta=beta), [1.0], [w])


def test_temperature_and_beta_move_between_argmax_and_uniform():
    # T -> 0: all mass on the top document (the positive), nothing left to push
    assert weights("cl", temperature=0.01)[0].item() < 1e-12
    # T -> infinity: uniform over the 3 documents, W+ = 2/3
    assert weights("cl", temperature=1e6)[0].item() == pytest.approx(2 / 3, abs=1e-5)
    sharp, flat = weights("base", beta=0.01)[1], weights("base", beta=100.0)[1]
    assert sharp[0, 1] > 0.99 and abs(flat[0, 1] - 0.5) < 1e-3


# two examples, K = 2, s_no = 0 so that p_yes = sigmoid(s_yes)
TAU_LOGITS = torch.tensor(
    [
        [[8.0, 0.0], [-8.0, 0.0], [-5.0, 0.0]],  # p_yes: .99966 | .00034 | .0067
        [[5.0, 0.0], [-6.5, 0.0], [3.0, 0.0]],  # p_yes: .9933  | .0015  | .95
    ],
    dtype=F64,
)


def test_tau_mask_zeroes_exactly_the_pairs_its_rule_names():
    tau = 1e-3
    base_pos, base_neg = weights("base", TAU_LOGITS)
    p_yes = torch.sigmoid(TAU_LOGITS[..., 0])
    # hand-applied rule: positive silenced if p_yes > 1 - tau, negative if p_yes < tau
    assert p_yes[0, 0] > 1 - tau and p_yes[1, 0] <= 1 - tau
    assert p_yes[0, 1] < tau and p_yes[0, 2] >= tau and p_yes[1, 1] >= tau
    keep_pos = torch.tensor([0.0, 1.0], dtype=F64)
    keep_neg = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=F64)
    assert_weights(
        weights("tau_mask", TAU_LOGITS, tau=tau), keep_pos * base_pos, keep_neg * base_neg
    )
    _, info = url_loss(TAU_LOGITS, "tau_mask", "sft", tau=tau)
    assert info["masked_fraction"].item() == pytest.approx(2 / 6)


def test_tau_threshold_moves_the_mask():
    got_pos, got_neg = weights("tau", TAU_LOGITS, tau=1e-2)  # .9933 > .99, .0067 and .0015 < .01
    assert got_pos.tolist() == [0.0, 0.0]
    assert got_neg.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_masked_fraction_is_zero_without_a_tau_factor_and_ignores_padding():
    _, info = url_loss(TAU_LOGITS, "base*sft", "sft")
    assert info["masked_fraction"].item() == 0.0
    mask = torch.tensor([[True, True, False], [True, True, True]])  # hide a kept negative
    _, info = url_loss(TAU_LOGITS, "tau_mask", "sft", mask, tau=1e-3)
    assert info["masked_fraction"].item() == pytest.approx(2 / 5)


def test_composition_is_the_elementwise_product():
    logits = 2.0 * torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    base, sft, tau = (weights(name, logits) for name in ("base", "sft", "tau"))
    for spec in ("base*sft", " base * sft ", ["base", "sft"]):
        got = weights(spec, logits)
        torch.testing.assert_close(got[0], base[0] * sft[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], base[1] * sft[1], rtol=0, atol=0)
    tau_mask, base_tau = weights("tau_mask", logits), weights("base*tau", logits)
    torch.testing.assert_close(tau_mask, base_tau, rtol=0, atol=0)
    torch.testing.assert_close(tau_mask[1], base[1] * tau[1], rtol=0, atol=0)
    assert parse_weight(["tau_mask", "sft"]) == ("base", "tau", "sft")


def test_unknown_weight_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown weight 'softmax'.*sft, cl, base, tau, tau_mask"):
        compute_weight("base*softmax", TINY)
    with pytest.raises(LossInputError, match="empty factor"):
        compute_weight("base*", TINY)
    assert set(WEIGHTS) == {"sft", "cl", "base", "tau", "tau_mask"}


@pytest.mark.parametrize("spec", ["sft", "cl", "base", "tau_mask", "base*sft", "cl*tau"])
def test_padded_negatives_weigh_nothing_and_change_nothing(spec):
    """Example 0 has 2 real negatives + 2 padded ones holding extreme logits: it must behave
    exactly like the same example with the padded columns removed."""
    logits = 3.0 * torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    logits[0, 3:] = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 5.0]], dtype=F64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    options = dict(weight_dtype=F64, tau=0.2)  # a tau that silences some pairs

    w_pos, w_neg = compute_weight(spec, logits, mask, **options)
    alone_pos, alone_neg = compute_weight(spec, logits[:1, :3], **options)
    assert w_neg[0, 2:].tolist() == [0.0, 0.0]  # documents 3 and 4
    torch.testing.assert_close(w_pos[:1], alone_pos, rtol=0, atol=1e-14)
    torch.testing.assert_close(w_neg[:1, :2], alone_neg, rtol=0, atol=1e-14)

    for direction in ("sft", "cl"):
        loss, info = url_loss(logits, spec, direction, mask, **options)
        alone, _ = url_loss(logits[:1, :3], spec, direction, **options)
        other, _ = url_loss(logits[1:], spec, direction, **options)
        torch.testing.assert_close(info["per_example"][0], alone, rtol=0, atol=1e-12)
        torch.testing.assert_close(loss, (alone + other) / 2, rtol=0, atol=1e-12)


def test_all_negatives_padded_gives_zero_negative_weight_not_nan():
    mask = torch.tensor([[True, False, False]])
    for spec in ("sft", "cl", "base", "tau_mask"):
        w_pos, w_neg = weights(spec, mask=mask)
        assert torch.isfinite(w_pos).all() and w_neg.tolist() == [[0.0, 0.0]]
    assert weights("cl", mask=mask)[0].item() == 0.0  # softmax over the positive alone


def test_url_loss_value_by_hand():
    """sft weight, sft direction, K = 2: -W+ r+ + sum W- r-, r = s_yes - s_no."""
    loss, info = url_loss(TINY, "sft", "sft", weight_dtype=F64)
    expected = -(1 - P_YES[0]) * 2.0 + P_YES[1] * (-1.0) + P_YES[2] * 0.0
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert info["r_pos"].tolist() == [2.0] and info["r_neg"].tolist() == [[-1.0, 0.0]]


# --- precision (Table 5) -------------------------------------------------------------

# a confident positive: softmax_0 = 1 / (1 + 3 e^-10) = 1 - 1.4e-4, closer to 1 than
# float16's spacing below 1 (2^-11 = 4.9e-4): 1 - softmax_0 rounds to 0 in half precision.
CONFIDENT = torch.tensor([[[10.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])


def test_weights_default_to_the_wider_of_float32_and_the_logits_dtype():
    for function in (compute_weight, url_loss):
        assert inspect.signature(function).parameters["weight_dtype"].default is None
    assert weight_dtype_for(CONFIDENT, None) is torch.float32
    assert weight_dtype_for(CONFIDENT.half(), None) is torch.float32
    assert weight_dtype_for(CONFIDENT.bfloat16(), None) is torch.float32
    assert weight_dtype_for(CONFIDENT.double(), None) is torch.float64
    assert weight_dtype_for(CONFIDENT.double(), torch.float16) is torch.float16  # asked for
    torch.testing.assert_close(
        compute_weight("cl", CONFIDENT), compute_weight("cl", CONFIDENT, weight_dtype=torch.float32)
    )
    # float64 logits: computed in float64, not rounded through float32 on the way
    logits = torch.tensor([[[1.0, 0.0], [0.3, 0.1]]], dtype=torch.float64)
    w64, _ = compute_weight("sft", logits)
    w32, _ = compute_weight("sft", logits, weight_dtype=torch.float32)
    assert w64.dtype == torch.float64 and w64.item() == 1.0 - torch.tensor([1.0, 0.0], dtype=torch.float64).softmax(0)[0].item()
    assert w64.item() != w32.item()


def test_cl_weight_in_float16_loses_the_confident_positive():
    expected = 3 * math.exp(-10) / (1 + 3 * math.exp(-10))
    w32, _ = compute_weight("cl", CONFIDENT, weight_dtype=torch.float32)
    w16, _ = compute_weight("cl", CONFIDENT, weight_dtype=torch.float16)
    wbf, _ = compute_weight("cl", CONFIDENT, weight_dtype=torch.bfloat16)
    assert w32.item() == pytest.approx(expected, rel=1e-3)
    assert w16.item() == 0.0 and wbf.item() == 0.0  # the positive's update vanishes
    assert w16.dtype == torch.float32  # returned in float32 whatever it was computed in


def test_weights_are_returned_in_float32_or_float64():
    assert compute_weight("sft", CONFIDENT.half())[0].dtype == torch.float32
    assert compute_weight("sft", CONFIDENT.bfloat16())[1].dtype == torch.float32
    assert compute_weight("sft", CONFIDENT.double())[0].dtype == torch.float64


def test_tau_keeps_a_negative_exactly_at_the_threshold():
    """The rule silences p_yes(d-) < tau: a negative at p_yes == tau keeps its weight."""
    p_yes = TAU_LOGITS.softmax(-1)[0, 2, 0].item()
    _, keep_neg = weights("tau", TAU_LOGITS, tau=p_yes)
    assert keep_neg[0].tolist() == [0.0, 1.0]


def test_weight_options_carry_spec_dtype_and_hyper_parameters_into_url_loss():
    from urlkit.loss import WeightOptions, WeightParams

    logits = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    options = WeightOptions.from_mapping({"name": "tau_mask", "dtype": "float32", "beta": 0.2, "tau": 0.3, "other": 1})
    assert options == WeightOptions("tau_mask", torch.float32, WeightParams(beta=0.2, tau=0.3))
    by_options = url_loss(logits, options, "sft")
    by_keywords = url_loss(logits, "tau_mask", "sft", weight_dtype=torch.float32, beta=0.2, tau=0.3)
    for a, b in zip(by_options[1].values(), by_keywords[1].values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(by_options[0], by_keywords[0])
    # the defaults live in WeightParams: an empty mapping is the plain sft weight
    assert WeightOptions.from_mapping({}) == WeightOptions()
    assert url_loss(logits, "base")[0].item() == url_loss(logits, WeightOptions("base"))[0].item()
    with pytest.raises(LossInputError, match="not beside it"):
        url_loss(logits, options, "sft", tau=0.1)
    with pytest.raises(LossInputError, match="unknown weight 'nope'"):
        WeightOptions.from_mapping({"name": "nope"})
    with pytest.raises(LossInputError, match="tau must be in"):
        WeightOptions.from_mapping({"name": "sft", "tau": 2})
    with pytest.raises(LossInputError, match="not a torch dtype"):
        WeightOptions.from_mapping({"dtype": "float8"})


def test_conf_weight_options_match_the_loss_defaults():
    """conf/weight_options.yaml (the keys every conf/weight/*.yaml composes) holds the same
    defaults as WeightParams, the one place the loss keeps them."""
    import yaml

    from urlkit.loss import WeightParams
    from urlkit.paths import REPO_ROOT

    shared = yaml.safe_load((REPO_ROOT / "conf" / "weight_options.yaml").read_text())
    defaults = WeightParams()
    assert {key: float(shared[key]) for key in ("temperature", "beta", "tau")} == {
        "temperature": defaults.temperature, "beta": defaults.beta, "tau": defaults.tau
    }
    assert shared["dtype"] is None
