"""Frozen bf16 projections through oneDNN prepacked weights (forward: W packed; backward:
W^T packed, dX = dY W) against the plain ``x @ W^T`` inside the fused decoder, on whole 1+4
training steps and evaluation calls, paired per step (each batch under both arms back to back,
the order swapped every other batch).

    python docs/bench/probes/prepacked_step.py [batches=12] [rounds=2]

Session 10 (Intel Xeon with AMX, 2 cores, bf16 frozen weights, 23:1x UTC, a fast phase of the
host): the same logits; 1+4 step 442 plain vs 439 ms packed, packed/plain median 0.980
(quartiles 0.936-1.023, 24 pairs): within noise; evaluation (40 queries, batch 512, merged)
2,018 vs 2,306 ms, packed/plain 1.145 (quartiles 1.129-1.175): slower. Not kept.

It ran against code a78bad4: it replaces ``_Group.__call__``, which session 11 split into
``_Group.operands`` and ``_project`` (run it at that commit to reproduce the figures).
"""

import sys
import time
from statistics import median

import torch
from _common import adapted_default_model, default_steps

from urlkit.evaluation.rerank import rerank_split
from urlkit.model import fused_decoder as fd

batches_n = int(sys.argv[1]) if len(sys.argv) > 1 else 12
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
PACKED: dict = {}
ARM = {"packed": False}


class PackedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, forward, backward):
        ctx.backward_weight = backward
        return torch.ops.mkldnn._linear_pointwise(x, forward, None, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.mkldnn._linear_pointwise(grad.contiguous(), ctx.backward_weight, None, "none", [], ""), None, None


def base_product(flat, weight):
    if not ARM["packed"] or weight.dtype != torch.bfloat16:
        return flat @ weight.t()
    key = (id(weight), weight.data_ptr(), tuple(weight.shape), weight._version)
    if key not in PACKED:
        with torch.inference_mode(False), torch.no_grad():
            PACKED[key] = (torch.ops.mkldnn._reorder_linear_weight(weight, 256),
                           torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), 256))
    return PackedLinear.apply(flat.to(weight.dtype).contiguous(), *PACKED[key])


def patched(self, x):  # the original with its first product replaced
    flat = x.reshape(-1, x.shape[-1])
    out = base_product(flat, self.base_weight())
    adapted = [adapter for adapter in self.adapters if adapter is not None]
    if adapted:
        dtype = out.dtype
        scales = {scale for _, _, scale in adapted}
        common = next(iter(scales)) if len(scales) == 1 else 1.0
        downs = [a.weight for a, _, _ in adapted]
        ups = [b.weight if len(scales) == 1 else b.weight * s for _, b, s in adapted]
        down = torch.cat(downs).to(dtype) if len(downs) > 1 else downs[0].to(dtype)
        up = torch.block_diag(*ups).to(dtype) if len(ups) > 1 else ups[0].to(dtype)
        out = out.addmm(flat.to(dtype) @ down.t(), up.t(), alpha=common)
    return out.view(*x.shape[:-1], out.shape[-1])


fd._Group.__call__ = patched
url, batches = default_steps(batches_n)


def timed(arm, fn):
    ARM["packed"] = arm == "packed"
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(label, units):
    for arm in ("plain", "packed"):
        for unit in units[:2]:
            timed(arm, unit)
    times = {"plain": [], "packed": []}
    for r in range(rounds):
        for i, unit in enumerate(units):
            for arm in (("plain", "packed") if (i + r) % 2 == 0 else ("packed", "plain")):
                times[arm].append(timed(arm, unit))
    ratios = sorted(p / q for p, q in zip(times["packed"], times["plain"], strict=True))
    print(f"{label}: plain {median(times['plain']) * 1e3:.0f} ms, packed {median(times['packed']) * 1e3:.0f} ms "
          f"(medians of {len(ratios)}); packed/plain median {median(ratios):.3f}, quartiles "
          f"{ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}", flush=True)


# the same step's gradients both ways (one batch, no optimizer step)
reranker = url.reranker
trainable = [p for p in reranker.parameters() if p.requires_grad]
from urlkit.training.module import url_backward  # noqa: E402

grads = {}
for arm in ("plain", "packed"):
    ARM["packed"] = arm == "packed"
    for p in trainable:
        p.grad = None
    logits, _, _ = url_backward(url.reranker, batches[0], url.loss_fn)
    grads[arm] = (logits.detach().float(), torch.cat([p.grad.flatten() for p in trainable]))
for p in trainable:
    p.grad = None
dl = (grads["plain"][0] - grads["packed"][0]).abs().max().item()
dg = ((grads["plain"][1] - grads["packed"][1]).norm() / grads["plain"][1].norm()).item()
print(f"packed vs plain: logits max |diff| {dl:.2e}, LoRA gradient relative diff {dg:.2e}", flush=True)

paired("1+4 training step", [lambda b=b: url(b) for b in batches])
# evaluation: the bench's merged bf16 scoring of 40 test queries' top-25 in batches of 512
built, data, split = adapted_default_model(40)


def evaluate():
    rerank_split(built.reranker, built.renderer, split, data.test_ranking, depth=25, batch_size=512, progress=False)


paired("evaluation, 40 queries x 25, batch 512, merged", [evaluate] * 4)
