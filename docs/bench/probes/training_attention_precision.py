"""Training's explicit attention over bf16 frozen weights: float32 (since session 15, what SDPA's
math kernel computes) against its products under autocast (before: bf16 products, the scores
rounded to bf16 before the softmax), on the default experiment's model with bf16 weights, in
one process (docs/performance.md, session 15). It prints

- the error of each variant's scores and LoRA gradients against the float32 model with the same
  (bf16-rounded) frozen weights and adapters, and that of transformers' forward (SDPA's math
  kernel), on one 1+N group;
- 1+N training steps over new groups, each stepped by both variants in alternating order.

The timing means something on a machine with bf16 matrix units only (an Intel Xeon with AMX):
elsewhere bf16 products are emulated and the bf16 variant only looks slow.

    python docs/bench/probes/training_attention_precision.py [groups [negatives ...]]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from _common import training

import urlkit.model.fused_decoder as fused
import urlkit.model.grouped_attention as grouped
from urlkit.bench.training import Stepper
from urlkit.bench.workload import build, compose_config, load_data
from urlkit.data.groups import GroupCollator, TrainGroups


def products_under_autocast(queries, keys, values, plan, scale, kv_heads):
    """The attention before session 15: the same code, autocast left on."""
    attention = grouped._banded_attention if plan.banded else grouped._dense_attention
    return attention(queries, keys, values, plan, scale, kv_heads)


GROUPS = 3  # groups whose errors are printed
VARIANTS = {"float32": grouped.grouped_attention, "bf16 products (autocast)": products_under_autocast}


def scores_and_gradients(reranker, prompts):
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    scores = reranker(prompts)
    weights = torch.linspace(-1, 1, scores.numel()).view_as(scores)
    return scores.detach(), torch.autograd.grad((scores * weights).sum(), trainable)


def errors(negatives: int) -> None:
    cfg = compose_config("default", f"data.n_negatives={negatives}")
    data = load_data(cfg)
    torch.manual_seed(0)
    exact = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        for name, parameter in exact.reranker.named_parameters():
            if "lora_B" in name:  # as after training (B starts at zero)
                parameter.normal_(0, 0.01)
            elif not parameter.requires_grad:  # the bf16 model's frozen weights, in float32
                parameter.copy_(parameter.bfloat16().float())
    low = build(compose_config("default", f"data.n_negatives={negatives}", "model.dtype=bfloat16"), torch.device("cpu"))
    low.reranker.load_state_dict({k: v for k, v in exact.reranker.state_dict().items() if "lora" in k}, strict=False)
    groups = TrainGroups(data.train, data.train_ranking, negatives, hard_fraction=cfg.data.hard_fraction,
                         hard_depth=cfg.data.hard_depth, seed=0)
    exact.reranker.train(), low.reranker.train()
    runs = {name: (low.reranker, attention) for name, attention in VARIANTS.items()}
    runs["transformers' forward (SDPA math)"] = (low.reranker.with_options(fused_layers=False), grouped.grouped_attention)
    collate = GroupCollator(exact.renderer, data.train, None)
    full = (batch for batch in map(collate, ([groups[i]] for i in range(len(groups)))) if bool(batch["mask"].all()))
    for group in range(GROUPS):  # the first groups with all N negatives (many queries have fewer)
        prompts = next(full)["prompts"]
        expected, expected_grads = scores_and_gradients(exact.reranker, prompts)
        for name, (reranker, attention) in runs.items():
            fused.grouped_attention = attention
            scores, grads = scores_and_gradients(reranker, prompts)
            relative = sorted(float((g - e).norm() / e.norm()) for g, e in zip(grads, expected_grads, strict=True))
            print(f"1+{negatives} group {group}, {name}: scores max error {float((scores - expected).abs().max()):.4f} "
                  f"(largest score {float(expected.abs().max()):.2f}); LoRA gradients' relative error median "
                  f"{relative[len(relative) // 2]:.4f}, max {relative[-1]:.4f}", flush=True)
    fused.grouped_attention = grouped.grouped_attention


def steps(negatives: int, count: int) -> None:
    cfg, _, built, groups, collate = setup = training(negatives, "model.dtype=bfloat16")
    picked = setup.new_groups(count + 2)
    stepper = Stepper(built.reranker, cfg)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    for index, group in enumerate(picked):  # each new group stepped by both, the order alternated
        batch = collate([groups[group]])
        for name in (order if index % 2 == 0 else order[::-1]):
            fused.grouped_attention = VARIANTS[name]
            start = time.perf_counter()
            stepper(batch)
            if index >= 2:
                times[name].append(time.perf_counter() - start)
    fused.grouped_attention = grouped.grouped_attention
    first, second = order
    ratios = [a / b for a, b in zip(times[first], times[second], strict=True)]
    print(f"1+{negatives} training step, bf16 weights: {first} {statistics.mean(times[first]):.4f} s, {second} "
          f"{statistics.mean(times[second]):.4f} s (means over the same {len(ratios)} new groups); paired ratio median "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})", flush=True)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    for negatives in [int(n) for n in sys.argv[2:]] or [4, 16]:
        errors(negatives)
        if count:
            steps(negatives, count)
