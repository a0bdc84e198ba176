"""The training optimizer (urlkit.training.module.adamw): AdamW fused into one kernel on the
CPU, the same update as PyTorch's default multi-tensor AdamW."""

from __future__ import annotations

import torch

from urlkit.training.module import adamw


def _parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(16, 576), (576, 16), (16, 1536), (2, 576)]  # LoRA A/B and a head's shapes
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]


def test_fused_on_the_cpu_and_equal_to_the_multi_tensor_update():
    fused_params, plain_params = _parameters(0), _parameters(0)
    fused = adamw(fused_params, lr=1e-2, weight_decay=0.01)
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(fused_params, plain_params, strict=True):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    moved = max((a - b).abs().max().item() for a, b in zip(fused_params, _parameters(0), strict=True))
    assert moved > 1e-3  # the parameters did move
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(fused_params, plain_params, strict=True))


def test_resumes_from_a_multi_tensor_state():
    """A checkpoint written by the unfused optimizer (runs before this change) loads and the
    next step is the one the unfused optimizer would have taken."""
    params, twins = _parameters(0), _parameters(0)
    plain, other = torch.optim.AdamW(params, lr=1e-2), torch.optim.AdamW(twins, lr=1e-2)
    for p, q in zip(params, twins, strict=True):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    plain.step()
    other.step()
    resumed = adamw(params, lr=1e-2)
    resumed.load_state_dict(plain.state_dict())
    for p, q in zip(params, twins, strict=True):
        p.grad, q.grad = torch.full_like(p, -0.5), torch.full_like(q, -0.5)
    resumed.step()
    other.step()
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(params, twins, strict=True))
