"""What a training step logs: the weights URL gave, and the weights the other families would have.

Pure torch on top of :mod:`urlkit.loss`. The paper's Figure 3 compares the average weights
of SFT and CL over training; logging the *counterfactual* weights of every family from the
same scores lets one run (whatever weight trains) show that comparison.

Keys of :func:`step_statistics` (all floats):

    loss                       the URL loss of the step
    w_pos_{mean,min,max}       W+ that trained (positives)
    w_neg_{mean,min,max}       W- that trained (real negatives only)
    masked_fraction            share of real pairs whose weight a tau mask zeroed
    loss_sft_native            per-pair K-way cross-entropy (summed per example)
    loss_infonce_native        InfoNCE over the yes-logits
    w_{sft,cl,base}_{pos,neg}  counterfactual mean weights of each family, same scores
    r_pos, r_neg               mean relevance (of the training direction)
    p_yes_pos, p_yes_neg       mean probability of the yes token (softmax over K columns)
    pairwise_accuracy          share of examples whose positive outscores every negative
"""

from __future__ import annotations

import torch

from urlkit.loss import WeightOptions, compute_weight, infonce_loss, sft_loss

COUNTERFACTUAL = ("sft", "cl", "base")


def _masked_stats(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
    real = values[mask]
    if real.numel() == 0:
        return float("nan"), float("nan"), float("nan")
    return real.mean().item(), real.min().item(), real.max().item()


@torch.no_grad()
def step_statistics(
    logits: torch.Tensor,
    loss: torch.Tensor,
    info: dict,
    mask: torch.Tensor | None,
    weight_options: WeightOptions,
) -> dict[str, float]:
    """Scalars of one (micro-)batch; ``logits`` (B, 1+N, K), ``mask`` (B, 1+N) or None."""
    logits = logits.detach().float()
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    neg_mask = mask[:, 1:]
    stats: dict[str, float] = {"loss": loss.detach().float().item()}

    w_pos, w_neg = info["w_pos"].float(), info["w_neg"].float()
    stats["w_pos_mean"], stats["w_pos_min"], stats["w_pos_max"] = (
        w_pos.mean().item(),
        w_pos.min().item(),
        w_pos.max().item(),
    )
    stats["w_neg_mean"], stats["w_neg_min"], stats["w_neg_max"] = _masked_stats(w_neg, neg_mask)
    stats["masked_fraction"] = float(info.get("masked_fraction", 0.0))
    stats["loss_sft_native"] = sft_loss(logits, mask).item()
    stats["loss_infonce_native"] = infonce_loss(
        logits, mask, temperature=weight_options.params.temperature
    ).item()

    for family in COUNTERFACTUAL:
        cf_pos, cf_neg = compute_weight(weight_options.with_spec(family), logits, mask)
        stats[f"w_{family}_pos"] = cf_pos.float().mean().item()
        stats[f"w_{family}_neg"] = _masked_stats(cf_neg.float(), neg_mask)[0]

    stats["r_pos"] = info["r_pos"].float().mean().item()
    stats["r_neg"] = _masked_stats(info["r_neg"].float(), neg_mask)[0]
    p_yes = logits.softmax(-1)[..., 0]
    stats["p_yes_pos"] = p_yes[:, 0].mean().item()
    stats["p_yes_neg"] = _masked_stats(p_yes[:, 1:], neg_mask)[0]
    # ranking scores (not r_neg, whose scale differs from r_pos for K > 2 with sft/rand)
    scores = info["scores"].float()
    best_negative = scores[:, 1:].masked_fill(~neg_mask, float("-inf")).max(dim=1).values
    stats["pairwise_accuracy"] = (scores[:, 0] > best_negative).float().mean().item()
    return stats


class StepAccumulator:
    """Averages micro-batch statistics over one optimizer step (gradient accumulation).

    Means are averaged, ``*_min`` keys take the minimum and ``*_max`` keys the maximum, so a
    logged step describes all of its micro-batches, not the last one.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict[str, float]] = []
        self.w_pos: list[torch.Tensor] = []
        self.w_neg: list[torch.Tensor] = []
        self.query_ids: list[str] = []
        self.nonfinite = False

    def add(self, stats: dict[str, float], info: dict, mask: torch.Tensor | None, query_ids) -> None:
        self._rows.append(stats)
        self.w_pos.append(info["w_pos"].detach().float().cpu())
        w_neg = info["w_neg"].detach().float().cpu()
        self.w_neg.append(w_neg[mask[:, 1:].cpu()] if mask is not None else w_neg.flatten())
        self.query_ids.extend(query_ids)

    def __len__(self) -> int:
        return len(self._rows)

    def mean(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in self._rows[0]:
            values = torch.tensor([row[key] for row in self._rows], dtype=torch.float64)
            finite = values[~values.isnan()]
            if finite.numel() == 0:
                out[key] = float("nan")
            elif key.endswith("_min"):
                out[key] = finite.min().item()
            elif key.endswith("_max"):
                out[key] = finite.max().item()
            else:
                out[key] = finite.mean().item()
        return out
