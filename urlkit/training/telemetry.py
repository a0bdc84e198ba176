"""What a training step logs: the weights URL gave, and the weights the other families would have.

Pure torch on top of :mod:`urlkit.loss`. The paper's Figure 3 compares the average weights
of SFT and CL over training; logging the *counterfactual* weights of every family from the
same scores lets one run (whatever weight trains) show that comparison.

Keys of a step's row (all floats):

    loss                       the URL loss of the step
    w_pos_{mean,min,max}       W+ that trained (positives)
    w_neg_{mean,min,max}       W- that trained (real negatives only)
    masked_fraction            share of real pairs whose weight a tau mask zeroed
    loss_sft_native            per-pair K-way cross-entropy (summed per example)
    loss_infonce_native        InfoNCE over the yes-logits
    w_{sft,cl,base}_{pos,neg}  counterfactual mean weights of each family, same scores
    w_underflow_{fp16,bf16}    share of the real pairs whose training weight is > 0 in float32
                               but exactly 0 computed in float16 / bfloat16, same scores (Table 5:
                               a null result of fp16 weights means something only if some
                               weights underflowed; count = share x real pairs of the step)
    r_pos, r_neg               mean relevance (of the training direction)
    p_yes_pos, p_yes_neg       mean probability of the yes token (softmax over K columns)
    pairwise_accuracy          share of examples whose positive outscores every negative

**Exact over micro-batches and ranks, one host sync per step.** Every mean is kept as a sum
and a count (queries, real negatives or real pairs), every extreme as a running min/max, all
as tensors on the scores' device. :class:`StepAccumulator` adds micro-batches up without
reading anything back; :meth:`StepAccumulator.finish` reduces the step over the ranks (one
all-gather of one packed vector: sums added, extremes compared, on every rank alike) and reads
the row back with one ``tolist()``. A step of R ranks x B queries therefore logs exactly the numbers of one
process with R x B queries, whatever the padding of each rank's negatives, and the host waits
for the device once per optimizer step instead of ~30 times per micro-batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from urlkit.loss import WeightOptions, compute_weight, infonce_loss, sft_loss

COUNTERFACTUAL = ("sft", "cl", "base")
EXTREMES = ("w_pos", "w_neg")  # keys with _min and _max columns


@torch.no_grad()
def batch_sums(
    logits: torch.Tensor,
    loss: torch.Tensor,
    info: dict,
    mask: torch.Tensor | None,
    weight_options: WeightOptions,
) -> tuple[
    dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor]]
]:
    """``({key: (sum, count)}, {key: (min, max)})`` of one micro-batch, as 0-d device tensors.

    ``logits`` (B, 1+N, K), ``mask`` (B, 1+N) or None. Empty selections give a count of 0
    and a (+inf, -inf) extreme, which :meth:`StepAccumulator.finish` turns into NaN."""
    logits = logits.detach().float()
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    neg_mask = mask[:, 1:]
    # counts known on the host are filled in on the device: torch.tensor(value, device=...) is a
    # copy from the host, which on CUDA waits for the device to finish its queued work
    queries = torch.full((), float(logits.shape[0]), device=logits.device)
    negatives = neg_mask.sum().float()

    def per_query(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values.float().sum(), queries

    def per_negative(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.where(neg_mask, values.float(), 0.0).sum(), negatives

    def mean_of_batch(
        value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # a mean over queries
        return value.detach().float() * queries, queries

    w_pos, w_neg = info["w_pos"].float(), info["w_neg"].float()
    sums = {
        "loss": mean_of_batch(loss),
        "w_pos_mean": per_query(w_pos),
        "w_neg_mean": per_negative(w_neg),
    }
    pairs = mask.sum().float()
    sums["masked_fraction"] = (
        info.get("masked_fraction", torch.zeros((), device=logits.device)).float() * pairs,
        pairs,
    )
    sums["loss_sft_native"] = mean_of_batch(sft_loss(logits, mask))
    temperature = weight_options.params.temperature
    sums["loss_infonce_native"] = mean_of_batch(infonce_loss(logits, mask, temperature=temperature))
    for family in COUNTERFACTUAL:
        cf_pos, cf_neg = compute_weight(weight_options.with_spec(family), logits, mask)
        sums[f"w_{family}_pos"] = per_query(cf_pos)
        sums[f"w_{family}_neg"] = per_negative(cf_neg)
    for tag, lost in underflow_counts(weight_options, logits, mask).items():
        sums[f"w_underflow_{tag}"] = (lost, pairs)
    sums["r_pos"] = per_query(info["r_pos"])
    sums["r_neg"] = per_negative(info["r_neg"])
    p_yes = logits.softmax(-1)[..., 0]
    sums["p_yes_pos"] = per_query(p_yes[:, 0])
    sums["p_yes_neg"] = per_negative(p_yes[:, 1:])
    # ranking scores (not r_neg, whose scale differs from r_pos for K > 2 with sft/rand)
    scores = info["scores"].float()
    best_negative = scores[:, 1:].masked_fill(~neg_mask, float("-inf")).max(dim=1).values
    sums["pairwise_accuracy"] = per_query(scores[:, 0] > best_negative)

    # padded negatives are left out by filling them with the extreme's neutral value, not by
    # selecting the real ones (w_neg[neg_mask]): a selection's size is data, which on CUDA the
    # host waits for. No real negative gives (+inf, -inf) either way
    inf = torch.full((), float("inf"), device=logits.device)
    real = neg_mask if w_neg.shape == neg_mask.shape else torch.ones_like(w_neg, dtype=torch.bool)
    extremes = {
        "w_pos": (w_pos.min(), w_pos.max()),
        "w_neg": (w_neg.masked_fill(~real, inf).min(), w_neg.masked_fill(~real, -inf).max())
        if w_neg.numel()  # a shape, not data: no sync
        else (inf, -inf),
    }
    return sums, extremes


def underflow_counts(weight_options: WeightOptions, logits: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Real pairs whose training weight is positive in float32 and exactly 0 in float16 /
    bfloat16 (0-d tensors on the logits' device: no host sync)."""
    reference = compute_weight(dataclasses.replace(weight_options, dtype=torch.float32), logits, mask)
    counts = {}
    for tag, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        low = compute_weight(dataclasses.replace(weight_options, dtype=dtype), logits, mask)
        counts[tag] = sum(((ref > 0) & (w == 0) & real).sum().float() for ref, w, real in
                          zip(reference, low, (mask[:, 0], mask[:, 1:]), strict=True))  # fmt: skip
    return counts


def step_statistics(
    logits: torch.Tensor,
    loss: torch.Tensor,
    info: dict,
    mask: torch.Tensor | None,
    weight_options: WeightOptions,
) -> dict[str, float]:
    """The row of one (micro-)batch as floats (one host sync); see the module docstring."""
    accumulator = StepAccumulator()
    accumulator.add(logits, loss, info, mask, [], weight_options)
    return accumulator.finish()


class StepAccumulator:
    """Sums one optimizer step's micro-batches on the device; :meth:`finish` makes the row.

    Means are over every query (or real negative, or real pair) of the step, on every rank;
    ``*_min`` and ``*_max`` over all of them. ``w_pos``/``w_neg`` keep the step's weights
    (for histograms) and ``query_ids`` this rank's queries.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, list[torch.Tensor]] | None = None
        self._extremes: dict[str, list[torch.Tensor]] | None = None
        self.micro_batches = 0
        self.w_pos: list[torch.Tensor] = []
        self._w_neg: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (weights, real negatives or None)
        self.query_ids: list[str] = []

    def add(
        self, logits, loss, info: dict, mask: torch.Tensor | None, query_ids, weight_options: WeightOptions
    ) -> None:
        sums, extremes = batch_sums(logits, loss, info, mask, weight_options)
        if self._sums is None:
            self._sums = {k: [s, n] for k, (s, n) in sums.items()}
            self._extremes = {k: [lo, hi] for k, (lo, hi) in extremes.items()}
        else:
            for key, (s, n) in sums.items():
                self._sums[key][0] = self._sums[key][0] + s
                self._sums[key][1] = self._sums[key][1] + n
            for key, (lo, hi) in extremes.items():
                self._extremes[key][0] = torch.minimum(self._extremes[key][0], lo)
                self._extremes[key][1] = torch.maximum(self._extremes[key][1], hi)
        self.micro_batches += 1
        self.w_pos.append(info["w_pos"].detach().float())
        w_neg = info["w_neg"].detach().float()
        real = mask[:, 1:] if mask is not None and w_neg.shape == mask[:, 1:].shape else None
        self._w_neg.append((w_neg, real))  # selected when read: a selection's size is data (a sync on CUDA)
        self.query_ids.extend(query_ids)

    @property
    def w_neg(self) -> list[torch.Tensor]:
        """The step's real negatives' weights, one flat tensor per micro-batch (for histograms)."""
        return [w_neg[real] if real is not None else w_neg.flatten() for w_neg, real in self._w_neg]

    def __len__(self) -> int:
        return self.micro_batches

    def finish(
        self,
        flags: torch.Tensor | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, float] | tuple[dict[str, float], list[float]]:
        """The step's row: sums over micro-batches (and over ranks with ``gather(vector)``, which
        returns every rank's vector as the rows of a matrix: :func:`urlkit.training.distributed.gather_rows`),
        divided by their counts; one ``tolist()``.

        ``flags``: a float vector to max-reduce along (the non-finite guard's verdicts); when
        given, returns ``(row, flags as floats)`` from the same host sync."""
        assert self._sums is not None, "finish() before any add()"
        keys, extreme_keys = list(self._sums), list(self._extremes)
        totals = torch.stack([v for k in keys for v in self._sums[k]])
        # the maxima and the negated minima are maxima alike (and the flags)
        peaks = [
            torch.stack(
                [v for k in extreme_keys for v in (-self._extremes[k][0], self._extremes[k][1])]
            )
        ]
        if flags is not None:
            peaks.append(flags.to(totals.device, totals.dtype))
        peaks = torch.cat(peaks)
        if gather is not None:
            # one collective for both: every rank's sums and peaks, added and compared here (in
            # rank order, so every rank reads the same numbers; sums cannot ride a max-reduce nor
            # the signed sums of r_pos/r_neg a min one). A vector of about 50 floats per rank
            ranks = gather(torch.cat([totals, peaks]))
            totals, peaks = ranks[:, : len(totals)].sum(0), ranks[:, len(totals) :].amax(0)
        values = torch.cat([totals, peaks]).double().tolist()  # the one host sync of the step
        row: dict[str, float] = {}
        for i, key in enumerate(keys):
            total, count = values[2 * i], values[2 * i + 1]
            if key in ("w_pos_mean", "w_neg_mean"):
                stem = key[: -len("_mean")]
                j = len(totals) + 2 * extreme_keys.index(stem)
                lowest, highest = -values[j], values[j + 1]
                finite = count > 0
                row[key] = total / count if finite else float("nan")
                row[f"{stem}_min"] = lowest if finite else float("nan")
                row[f"{stem}_max"] = highest if finite else float("nan")
            else:
                row[key] = total / count if count > 0 else float("nan")
        if flags is None:
            return row
        return row, values[len(totals) + 2 * len(extreme_keys) :]
