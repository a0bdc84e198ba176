"""The two native objectives URL decomposes, for comparison and logging.

Dai et al. (2025), arXiv 2510.14824, Section 3: SFT is a per-pair cross-entropy on the next
token (label "yes" for the positive, "no" for negatives); CL is InfoNCE over the "yes"
logits of 1 positive and N negatives.

    sft_loss     = mean_b sum_{real d} -log p_label(d),  p = softmax over the K columns
    infonce_loss = mean_b -log softmax_0( s_yes(d) / T over the real documents of b )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urlkit.loss.inputs import NO, YES, check_logits, check_mask, check_positive, loss_dtype


def sft_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """K-way SFT cross-entropy, summed over the real documents of an example, averaged over examples.

    Args:
        logits: (B, 1+N, K); document 0 positive (label column 0, "yes"), documents 1..N
            negatives (label column 1, "no").
        mask: optional bool (B, 1+N), False = padded negative (contributes nothing).
    """
    check_logits(logits, caller="sft_loss")
    mask = check_mask(mask, logits, caller="sft_loss")
    log_p = logits.to(loss_dtype(logits)).log_softmax(dim=-1)
    label_log_p = torch.cat([log_p[:, :1, YES], log_p[:, 1:, NO]], dim=1)  # (B, 1+N)
    return -torch.where(mask, label_log_p, 0.0).sum(dim=1).mean()


def infonce_loss(
    logits: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """InfoNCE over the "yes" logits of the real documents (target: document 0), averaged over examples.

    Args:
        logits: (B, 1+N, K); only column 0 ("yes") is read.
        mask: optional bool (B, 1+N), False = padded negative (left out of the softmax).
        temperature: T, the yes-logits are divided by it.
    """
    check_logits(logits, caller="infonce_loss")
    mask = check_mask(mask, logits, caller="infonce_loss")
    check_positive(temperature, name="temperature", caller="infonce_loss")
    yes = logits.to(loss_dtype(logits))[..., YES] / temperature
    yes = yes.masked_fill(~mask, float("-inf"))
    positive = torch.zeros(yes.shape[0], dtype=torch.long, device=yes.device)
    return F.cross_entropy(yes, positive)
