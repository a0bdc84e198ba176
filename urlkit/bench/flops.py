"""Model FLOPs of scoring and of a LoRA training step (what an MFU divides by the ceiling).

For a decoder with non-embedding parameters P (the transformer layers; the K gathered head
rows are negligible), L layers and hidden size H, the forward pass over T computed tokens
that attend to c_t keys each (causal: c_t = the token's position in its prompt + 1) costs

    forward  = 2 * (P + P_lora) * T  +  4 * L * H * sum_t c_t          (QK^T and AV)

LoRA training with a frozen backbone needs input gradients through every layer (as many
FLOPs as the forward's matmuls) but weight gradients only for the adapters, and attention's
backward costs twice its forward:

    backward = 2 * P * T  +  4 * P_lora * T  +  8 * L * H * sum_t c_t

urlkit's fused pass computes its last layer's output half (o, gate, up, down and their adapters)
for the tokens whose states are scored only (one per prompt); for the other ``unread`` tokens
that share of a layer is subtracted, forward and backward.

Tokens count once however a step computes them: the constant-memory step's recomputation
is not model work (MFU, not hardware FLOP utilisation), and padding is not model work. With
shared prefixes T counts each shared token once: the figure is the work actually done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    params: int  # non-embedding parameters of the frozen decoder layers
    lora_params: int  # trainable adapter parameters inside those layers
    layers: int
    hidden: int
    kv_hidden: int = 0  # width of the key and value projections (grouped-query attention)
    intermediate: int = 0  # width of the MLP

    @classmethod
    def of(cls, decoder: torch.nn.Module) -> ModelShape:
        frozen = lora = 0
        for name, parameter in decoder.layers.named_parameters():
            if "lora_" in name:
                lora += parameter.numel()
            else:
                frozen += parameter.numel()
        config = decoder.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        return cls(frozen, lora, len(decoder.layers), config.hidden_size, kv * head_dim,
                   getattr(config, "intermediate_size", 4 * config.hidden_size))

    def projections(self) -> list[tuple[int, int]]:
        """(in, out) of one layer's weight matrices: q, k, v, o, gate, up, down."""
        h, kv, i = self.hidden, self.kv_hidden or self.hidden, self.intermediate or 4 * self.hidden
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def output_half_share(self) -> float:
        """The share of a layer's weights after its attention (o, gate, up, down)."""
        sizes = [n_in * n_out for n_in, n_out in self.projections()]
        return sum(sizes[3:]) / sum(sizes)

    def _through_weights(self, tokens: int, unread: int) -> float:
        """Tokens through every weight of the model: ``unread`` of them skip the last layer's
        output half."""
        return tokens - unread * self.output_half_share() / self.layers

    def forward_flops(self, tokens: int, context: int, unread: int = 0) -> float:
        """``tokens`` computed, attending to ``context`` keys in total (sum of c_t); ``unread`` of
        them skip the last layer's output half."""
        through = self._through_weights(tokens, unread)
        return 2.0 * (self.params + self.lora_params) * through + 4.0 * self.layers * self.hidden * context

    def training_flops(self, tokens: int, context: int, unread: int = 0) -> float:
        through = self._through_weights(tokens, unread)
        backward = 2.0 * self.params * through + 4.0 * self.lora_params * through + 8.0 * self.layers * self.hidden * context
        return self.forward_flops(tokens, context, unread) + backward


def plain_work(attention_mask: torch.Tensor) -> tuple[int, int]:
    """(tokens, context) of a plain padded batch: its real tokens, each prompt causal."""
    lengths = attention_mask.sum(dim=1).tolist()
    return sum(lengths), sum(n * (n + 1) // 2 for n in lengths)


def tree_work(tree) -> tuple[int, int]:
    """(tokens, context) of a :class:`urlkit.model.prefix_sharing.PrefixTree`: each token attends
    to the real tokens of the rows it continues and to its own prompt's earlier tokens."""
    tokens = context = 0
    seen = None
    for level in tree.levels:
        lengths = level.attention_mask.sum(dim=1)
        start = torch.zeros_like(lengths) if level.parent is None else seen[level.parent]
        tokens += int(lengths.sum())
        # positions start .. start+n-1 attend to start+1 .. start+n keys
        context += int((lengths * start + lengths * (lengths + 1) // 2).sum())
        seen = start + lengths
    for packs in tree.buckets:
        real = packs.attention_mask
        start = 0 if packs.parent is None else seen[packs.parent][:, None]
        tokens += int(real.sum())
        # a token at offset o sees the row's ancestors and o + 1 tokens of its own prompt
        context += int(((start + packs.offset + 1) * real).sum())
    return tokens, context


def batch_work(batch: dict, share_prefix: bool) -> tuple[int, int, int, int, list[int]]:
    """(computed tokens, context, token slots incl. padding, prompt tokens, token slots of each
    decoder pass) of one collated batch, as :class:`urlkit.model.scoring.Reranker` computes it.
    The last are the row counts of the pass's matrix products: what an MFU's ceiling is
    probed at (a batch of shared prefixes is several passes: a level, then buckets of packs)."""
    from urlkit.model.prefix_sharing import prefix_tree

    mask = batch["attention_mask"]
    prompt_tokens = int(mask.sum())
    tree = prefix_tree(batch["input_ids"], mask) if share_prefix else None
    if tree is None:
        tokens, context = plain_work(mask)
        return tokens, context, mask.numel(), prompt_tokens, [mask.numel()]
    tokens, context = tree_work(tree)
    return tokens, context, tree.tokens, prompt_tokens, [level.input_ids.numel() for level in tree.levels + tree.buckets]


def pass_rows(slots: list[int]) -> float:
    """The rows of a typical decoder pass, weighted by its tokens (sum n^2 / sum n): where the
    time of a batch of passes of different sizes is spent."""
    return sum(n * n for n in slots) / max(1, sum(slots))


def reads_only_scored(reranker) -> bool:
    """Whether ``reranker``'s passes compute their last layer's output for the scored tokens
    only: its fused pass applies (``ScoringOptions.fused_layers``, a model it reproduces) with
    ``read_only_last_layer``."""
    from urlkit.model.fused_decoder import fused_decoder

    options = reranker.options
    return options.fused_layers and options.read_only_last_layer and fused_decoder(reranker.decoder) is not None
