"""The one scoring function: prompts -> K score columns. Training, evaluation and
``urlkit.rerank`` all call :class:`Reranker`, so a model is scored the same way everywhere.

    logits[i, k] = head(decoder(prompt_i)[final position])[k]

The decoder is the backbone *without* its LM head (``LlamaForCausalLM.model``,
``Qwen2_5_VLForConditionalGeneration.model``, which also takes ``pixel_values``,
``image_grid_thw`` and ``mm_token_type_ids``); the head multiplies only K rows (see ``urlkit.model.heads``). Training reshapes
the (n_prompts, K) logits to (B, 1+N, K) for ``url_loss``; ranking uses column 0 minus column 1
(column 0 alone for ``direction=cl``).

Prompts that share a prefix (the candidates of one query; the system turn and instruction of
a whole split) are scored with that prefix computed once (``urlkit.model.prefix_sharing``): same
scores up to float rounding, 2-3x fewer tokens through the decoder on the embedded data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from urlkit.model.heads import decoder_inputs, final_position
from urlkit.model.prefix_sharing import prefix_tree, run_levels


class Reranker(nn.Module):
    """``Reranker(backbone, head)(batch) -> logits (n_prompts, K)``.

    ``batch`` is the output of ``PromptRenderer.collate``: LEFT-padded ``input_ids`` and
    ``attention_mask``, optional ``pixel_values``, ``image_grid_thw`` and ``mm_token_type_ids``
    (other keys are ignored). The score is read at
    each row's last real token (index -1 under left padding; right padding also works because
    that position is found from ``attention_mask``). No explicit ``position_ids`` are passed:
    the supported backbones use rotary embeddings, whose attention depends only on relative
    positions, so a prompt scores the same alone, left-padded or right-padded (tested), and
    Qwen2.5-VL computes its multimodal positions itself.

    LoRA: ``peft.get_peft_model`` injects its layers *in place* inside the backbone, so the
    decoder held here keeps working whether the Reranker is built before or after wrapping
    (a peft model passed in is unwrapped to its base model).

    ``share_prefix`` (default): text batches whose prompts share prefixes run through
    :func:`urlkit.model.prefix_sharing.run_levels`, each shared prefix computed once, when that
    saves at least 10% of the token slots; otherwise, and for images or gradient
    checkpointing (which turns the decoder's key/value cache off), one plain pass.
    """

    def __init__(self, backbone: Any, head: nn.Module, share_prefix: bool = True) -> None:
        super().__init__()
        self.decoder = inner_decoder(backbone.model)
        self.head = head
        self.is_vision_language = bool(getattr(backbone, "is_vision_language", False))
        self.share_prefix = share_prefix
        self.pack_length = 128  # level C rows of packed continuations (urlkit.model.prefix_sharing)
        self.fold = True  # fold the last shared level into the packed rows where that is free

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(n_prompts, L) token batch -> (n_prompts, K) float32 logits."""
        device = self.model_device()
        inputs = {key: value.to(device) for key, value in decoder_inputs(batch).items()}
        if self._can_share(inputs):
            tree = prefix_tree(inputs["input_ids"], inputs["attention_mask"], pack_length=self.pack_length,
                               fold=self.fold)
            if tree is not None:
                return self.head(run_levels(self.decoder, tree))
        hidden = self.decoder(**inputs, use_cache=False).last_hidden_state
        return self.head(final_position(hidden, inputs["attention_mask"]))

    def model_device(self) -> torch.device:
        """Where the model runs: batches collated on the CPU (evaluation, ``urlkit.rerank``)
        are moved there."""
        return next(self.decoder.parameters()).device

    def _can_share(self, inputs: Mapping[str, torch.Tensor]) -> bool:
        checkpointing = self.training and getattr(self.decoder, "gradient_checkpointing", False)
        return self.share_prefix and not self.is_vision_language and not checkpointing and set(inputs) == {
            "input_ids", "attention_mask"}


def inner_decoder(model: nn.Module) -> nn.Module:
    """The transformer stack of a causal LM / VLM, without its LM head.

    ``PreTrainedModel.base_model`` is the submodule named by ``base_model_prefix`` ("model"
    for Llama, Qwen2/3 and Qwen2.5-VL). A peft wrapper is looked through first: its own
    ``base_model`` attribute is the LoRA tuner, not the decoder.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    decoder = getattr(model, "base_model", None)
    if decoder is None or decoder is model:
        raise TypeError(
            f"{type(model).__name__} has no inner decoder (base_model); expected a transformers "
            "causal LM or vision-language model such as LlamaForCausalLM"
        )
    return decoder
