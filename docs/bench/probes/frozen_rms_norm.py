"""A frozen RMSNorm's hand-written backward (urlkit.model.fused_decoder._FrozenRMSNorm) against
autograd's composite of the same forward: one norm alone at a 1+4 and a 1+16 step's token
counts, then whole training steps of the default experiment, paired (each batch under both,
back to back, the order swapped every other batch), because this host's speed drifts by 1.5x
within minutes (docs/performance.md, session 8).

    python docs/bench/probes/frozen_rms_norm.py [steps [rounds]]
"""

from __future__ import annotations

import sys
import time
from statistics import median

import torch
import torch.nn.functional as F
from _common import default_steps

from urlkit.model import fused_decoder


def composite(x: torch.Tensor, norm) -> torch.Tensor:  # the fused pass's norm before session 8
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon).to(x.dtype)


ARMS = {"hand-written backward": fused_decoder._rms_norm, "autograd's composite": composite}


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
