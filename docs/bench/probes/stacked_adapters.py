"""A layer group's adapter operands as one autograd function, against the code as it is.

``urlkit.model.fused_decoder._Group.operands`` builds, every pass, the adapters' A stacked
and their B scaled and block-diagonal, in the frozen weights' dtype: ~15 autograd nodes a
group (cat, block_diag, scale, casts) and as many in the backward, 120 groups a pass. Here the
same operands come from one ``torch.autograd.Function`` per group (forward: one cat and cast,
the scaled blocks written into a zero matrix; backward: the diagonal blocks cast and scaled),
bit-identical in values and gradients (``check``) (docs/performance.md, session 23).

    python docs/bench/probes/stacked_adapters.py check
    python docs/bench/probes/stacked_adapters.py time 40    # 1+4 steps over 40 new groups, alternated
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from _common import training

import urlkit.model.fused_decoder as fused
from urlkit.bench.training import Stepper
from urlkit.training.module import url_backward


class StackedAdapters(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dtype, scales, count, *weights):
        downs, ups = weights[:count], weights[count:]
        down = torch.cat(downs).to(dtype) if count > 1 else downs[0].to(dtype)
        rows, ranks = [u.shape[0] for u in ups], [u.shape[1] for u in ups]
        if count == 1:
            up = (ups[0] * scales[0]).to(dtype)
        else:
            up = ups[0].new_zeros(sum(rows), sum(ranks), dtype=dtype)
            row = rank = 0
            for u, scale in zip(ups, scales, strict=True):
                up[row:row + u.shape[0], rank:rank + u.shape[1]] = u * scale
                row, rank = row + u.shape[0], rank + u.shape[1]
        ctx.meta = (rows, ranks, scales, [d.dtype for d in downs], [u.dtype for u in ups])
        return down, up

    @staticmethod
    def backward(ctx, grad_down, grad_up):
        rows, ranks, scales, down_dtypes, up_dtypes = ctx.meta
        parts = grad_down.split(ranks) if len(ranks) > 1 else (grad_down,)
        downs = [g.to(t) for g, t in zip(parts, down_dtypes, strict=True)]
        ups, row, rank = [], 0, 0
        for height, width, scale, dtype in zip(rows, ranks, scales, up_dtypes, strict=True):
            ups.append(grad_up[row:row + height, rank:rank + width].to(dtype) * scale)
            row, rank = row + height, rank + width
        return (None, None, None, *downs, *ups)


AS_IS = fused._Group.operands


def stacked_operands(self, dtype):
    weight = self.base_weight()
    if all(adapter is None for adapter in self.adapters):
        return weight, None, None
    if any(adapter is None for adapter in self.adapters):
        return AS_IS(self, dtype)
    downs = [a.weight for a, _, _ in self.adapters]
    ups = [b.weight for _, b, _ in self.adapters]
    down, up = StackedAdapters.apply(dtype, [s for _, _, s in self.adapters], len(downs), *downs, *ups)
    return weight, down, up


setup = training(4)
stepper = Stepper(setup.built.reranker, setup.cfg)
if sys.argv[1] == "check":
    batch = setup.collate([setup.groups[setup.new_groups(1)[0]]])
    results = {}
    for stacked in (False, True):
        fused._Group.operands = stacked_operands if stacked else AS_IS
        stepper.reranker.zero_grad(set_to_none=True)
        logits, _, _ = url_backward(stepper.reranker, batch, stepper.loss_fn)
        grads = {n: p.grad.clone() for n, p in stepper.reranker.named_parameters() if p.grad is not None}
        results[stacked] = (logits.detach().clone(), grads)
    same = all(torch.equal(results[False][1][n], results[True][1][n]) for n in results[False][1])
    print(f"scores equal: {torch.equal(results[False][0], results[True][0])}; "
          f"{len(results[False][1])} gradients equal: {same}")
    sys.exit()
count = int(sys.argv[2])
times: dict[bool, list[float]] = {False: [], True: []}
for index, group in enumerate(setup.new_groups(count + 1)):
    batch = setup.collate([setup.groups[group]])
    for stacked in ((False, True) if index % 2 == 0 else (True, False)):
        fused._Group.operands = stacked_operands if stacked else AS_IS
        start = time.perf_counter()
        stepper(batch)
        if index:  # the first group warms up both
            times[stacked].append(time.perf_counter() - start)
ratios = [b / a for a, b in zip(times[False], times[True], strict=True)]
print(f"1+4 steps: as is {statistics.median(times[False]):.4f} s, one function a group "
      f"{statistics.median(times[True]):.4f} s (medians); paired ratio median {statistics.median(ratios):.4f} over {len(ratios)} new groups")
