"""A frozen RMSNorm with its backward written out (tried in session 8, not kept) against
autograd's composite of the same forward (the fused pass's ``_rms_norm``): one norm alone at a
1+4 and a 1+16 step's token counts, then whole training steps of the default experiment,
paired (each batch under both, back to back, the order swapped every other batch), because
this host's speed drifts by 1.5x within minutes (docs/performance.md, session 8).

    python docs/bench/probes/frozen_rms_norm.py [steps [rounds]]
"""

from __future__ import annotations

import sys
import time
from statistics import median

import torch
from _common import default_steps

from urlkit.model import fused_decoder


class FrozenRMSNorm(torch.autograd.Function):
    """``weight * rms_norm(x.float()).to(x.dtype)``, the same forward bit for bit, with the
    gradient to x (weight frozen) written out: for x̂ = x r, r = 1 / sqrt(mean(x^2) + eps) and
    g = (grad * weight) in float32, dx = r (g - x̂ mean(g x̂)): 5 kernels instead of ~15."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        upcast = x.float()
        rstd = torch.rsqrt(upcast.pow(2).mean(-1, keepdim=True).add_(eps))
        normed = upcast * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return weight * normed.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, rstd, weight = ctx.saved_tensors
        scaled = (grad * weight).float()  # rounded to the output's dtype first, as autograd's mul
        projection = (scaled * normed).mean(-1, keepdim=True)
        return torch.addcmul(scaled, normed, projection, value=-1).mul_(rstd).to(grad.dtype), None, None


def hand_written(x: torch.Tensor, norm) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad and not norm.weight.requires_grad:
        return FrozenRMSNorm.apply(x, norm.weight, norm.variance_epsilon)
    return composite(x, norm)


composite = fused_decoder._rms_norm
ARMS = {"hand-written backward": hand_written, "autograd's composite": composite}


def norm_alone(tokens: int, repeats: int = 100) -> None:
    x = torch.randn(1, tokens, 576, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(1, tokens, 576, dtype=torch.bfloat16)
    norm = torch.nn.Module()
    norm.weight, norm.variance_epsilon = torch.rand(576, dtype=torch.bfloat16), 1e-5
    for name, arm in ARMS.items():
        for _ in range(5):
            torch.autograd.grad(arm(x, norm), x, grad)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.autograd.grad(arm(x, norm), x, grad)
        print(f"one norm, {tokens} bf16 tokens, {name}: {(time.perf_counter() - start) / repeats * 1e3:.3f} ms forward and backward")


for tokens in (200, 560):
    norm_alone(tokens)
stepper, batches = default_steps(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
times: dict[str, list[float]] = {name: [] for name in ARMS}


def step(name: str, batch: dict) -> float:
    fused_decoder._rms_norm = ARMS[name]
    start = time.perf_counter()
    stepper(batch)
    return time.perf_counter() - start


for name in ARMS:  # warm-up
    for batch in batches[:3]:
        step(name, batch)
for round_ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 4):
    for i, batch in enumerate(batches):
        for name in list(ARMS) if (i + round_) % 2 == 0 else list(ARMS)[::-1]:
            times[name].append(step(name, batch))
new, old = (times[name] for name in ARMS)
ratios = sorted(n / o for n, o in zip(new, old, strict=True))
print(f"1+4 steps, paired ({len(ratios)} pairs): hand-written {median(new) * 1e3:.0f} ms, composite {median(old) * 1e3:.0f} ms "
      f"(medians); per-step ratio median {median(ratios):.3f}, quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}")
