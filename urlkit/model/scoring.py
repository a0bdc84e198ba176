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

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from urlkit.hardware import can_compile
from urlkit.model.decoder_calls import states_at
from urlkit.model.fused_decoder import fused_decoder
from urlkit.model.heads import decoder_inputs, final_index
from urlkit.model.lora import fuse_lora
from urlkit.model.prefix_sharing import prefix_tree, run_levels

LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class ScoringOptions:
    """How :class:`Reranker` runs the decoder; every setting gives the same scores and
    gradients (up to float rounding: tests/model/test_performance_shared_prefix.py), only the
    speed differs (``python -m urlkit.bench`` measures each against the defaults).

    share_prefix  compute prompt prefixes shared by several prompts once (prefix_sharing):
                  True always, False never, None (the default) everywhere but in eval mode on
                  a GPU, where one padded pass of the whole batch scored 3.2x the documents
                  per second (H200, docs/performance.md, session 9): there the shared levels'
                  many small passes wait on kernel launches
    pack_length   tokens per row of packed continuations (1: one row per continuation)
    fold          fold the last shared level into the packed rows where that is free
    mixed         with bfloat16/float16 frozen weights and float32 LoRA adapters, run the
                  decoder under ``torch.autocast`` to the weights' dtype: the adapters'
                  products run on the bf16 units from float32 master weights (cast once per
                  pass), added into the base projection's output by one ``addmm_``
                  (``urlkit.model.lora.fuse_lora``), instead of casting every projection's
                  input up to float32 and its output back (peft's own behaviour,
                  ``mixed=False``). The head and the loss stay float32. The same path as
                  Lightning's ``bf16-mixed`` on GPUs.
    cpu_training_attention
                  SDPA kernel of a training-mode pass on the CPU: ``math`` (matrix
                  products and a softmax) or ``default`` (PyTorch's choice: the fused
                  flash kernel, whose CPU backward costs ~3 ms a call at these lengths, 13%
                  of a training step; docs/performance.md). Scoring in eval mode and every
                  pass on a GPU keep PyTorch's choice (the fused kernel).
    fused_layers  run a Llama decoder through ``urlkit.model.fused_decoder``: the same
                  function with q/k/v and gate/up as one product each, their adapters
                  stacked, and fewer kernels for norms and rotary embeddings (other
                  architectures, LoRA variants and wrapped layers run transformers' forward)
    compiled_layers
                  run the fused pass's layers through ``torch.compile``
                  (``urlkit.model.fused_decoder.compiled_halves``: one graph for each half of
                  a layer around its attention, compiled once a process): True always, False
                  never, None (the default) for eval-mode passes without gradients over
                  bf16 or float16 frozen weights on a CPU where inductor finds a C++
                  compiler, in a scoring job long enough to pay for compiling on a cold
                  cache (``job_tokens`` at least ``compile_from_tokens``). Compiled, an
                  evaluation call took 0.83x the time (its elementwise work fused; 2-core Xeon
                  with AMX, bf16, session 11) and 0.91x (AMD EPYC with AVX512-BF16, session
                  22), for 17-27 s of compiling on a cold cache (~22 runs of g++; ~4 s warm):
                  the default experiment's 2,690 test prompts and 3 x 178 dev prompts ran
                  4 min 58 s compiled against 4 min 25 s eager there (session 26). Over float32
                  weights the products are most of a call and the compile buys nothing it
                  does not cost (AMD EPYC, session 14), so those stay eager; the whole layer
                  compiled made a training step 0.97-0.99x for ~45 s, so training stays eager
                  by default, as does a GPU until measured there
    job_tokens    the prompt tokens (padding aside, before prefix sharing) of the scoring job
                  this reranker serves: ``urlkit.evaluation.rerank.rerank_split`` scores each
                  split through a view with its count (0: a job of unknown size, e.g. one
                  training step or a ``urlkit.rerank`` call)
    compile_from_tokens
                  the smallest ``job_tokens`` for which ``compiled_layers=None`` compiles:
                  where a cold compile's ~20 s is won back by the ~10-17% faster calls, about
                  280 s of eager scoring on the EPYC (~4,100 prompt tokens a second on
                  wordsense, bf16) and ~100 s on the AMX Xeon, ~1M tokens on both: manpages'
                  300 test queries (1.74M) compile, wordsense's 500 (0.26M) do not
    token_multiple
                  the fused pass's layers see a multiple of this many tokens (zero rows
                  appended to the pass, dropped before its attention and at its end; the
                  explicit attention's width and keys rounded alike): None (the default) = 8
                  for a training-mode pass on a CPU, 1 elsewhere. oneDNN builds a matrix
                  kernel for every new row count (~1-3 ms each, ~34 in a 1+4 training step,
                  whose token count changes every step); rounded up, the counts repeat and
                  the kernels are reused: 0.84-0.92x the time of a step over new groups,
                  ~1.01x over groups seen before (2-core Xeon with AMX, bf16,
                  docs/performance.md, session 12). An evaluation pass (hundreds to
                  thousands of rows) measured even
    read_only_last_layer
                  the fused pass's last layer computes its output (o, MLP, final norm) for the
                  tokens whose states are scored only, one per prompt (a shared level's for
                  none: only its keys and values are read): ~84% of a layer's products, ~2.8% of
                  the model's, skipped for every other token; False computes all, then gathers
    banded_attention
                  the explicit attention (above: training on a CPU) of a packed row in
                  blocks of 32 queries, each against only the keys its queries read
                  (the prefix, its query's opening, the continuations it spans; gathered,
                  ``urlkit.model.grouped_attention``) where that scores at most 75% of the
                  dense scores; the same numbers as dense. On a float32 AMD EPYC (session 15):
                  1+16 steps that banded 0.927x, two queries' 1+16 a step 0.812x, 1+4 steps
                  that banded 0.975x. False: dense always
    """

    share_prefix: bool | None = None
    pack_length: int = 128
    fold: bool = True
    mixed: bool = True
    cpu_training_attention: str = "math"
    fused_layers: bool = True
    compiled_layers: bool | None = None
    job_tokens: int = 0
    compile_from_tokens: int = 1_000_000
    token_multiple: int | None = None
    read_only_last_layer: bool = True
    banded_attention: bool = True

    def __post_init__(self) -> None:
        if self.cpu_training_attention not in ("math", "default"):
            raise ValueError(f"cpu_training_attention must be math or default, got {self.cpu_training_attention!r}")
        if self.token_multiple is not None and (not isinstance(self.token_multiple, int) or self.token_multiple < 1):
            raise ValueError(f"token_multiple must be a positive int or None, got {self.token_multiple!r}")
        for name in ("job_tokens", "compile_from_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative int, got {getattr(self, name)!r}")


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

    ``share_prefix`` (by default in training, and in evaluation on a CPU): text batches whose
    prompts share prefixes run through :func:`urlkit.model.prefix_sharing.run_levels`, each
    shared prefix computed once, when that saves at least 10% of the token slots; otherwise,
    and for images or gradient checkpointing (which turns the decoder's key/value cache off),
    one plain pass.
    """

    def __init__(self, backbone: Any, head: nn.Module, options: ScoringOptions | None = None) -> None:
        super().__init__()
        self.decoder = inner_decoder(backbone.model)
        self.head = head
        self.is_vision_language = bool(getattr(backbone, "is_vision_language", False))
        self.options = options or ScoringOptions()

    def with_options(self, **changes: Any) -> Reranker:
        """A reranker over the same decoder and head (shared, not copied) with some
        :class:`ScoringOptions` changed, e.g. ``with_options(share_prefix=False)``."""
        other = Reranker.__new__(Reranker)
        nn.Module.__init__(other)
        other.decoder, other.head, other.is_vision_language = self.decoder, self.head, self.is_vision_language
        other.options = dataclasses.replace(self.options, **changes)
        other.train(self.training)
        return other

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(n_prompts, L) token batch -> (n_prompts, K) float32 logits."""
        device = self.model_device()
        inputs = {key: value.to(device) for key, value in decoder_inputs(batch).items()}
        options = self.options
        decoder = self._pass(inputs, device)
        if self._can_share(inputs):
            tree = prefix_tree(inputs["input_ids"], inputs["attention_mask"], pack_length=options.pack_length,
                               fold=options.fold)
            if tree is not None:
                with self._precision(device), self._attention(device):
                    hidden = run_levels(decoder, tree)
                return self.head(hidden)
        mask = inputs["attention_mask"]
        last = torch.arange(len(mask), device=device) * mask.shape[1] + final_index(mask)
        with self._precision(device), self._attention(device):
            _, hidden = states_at(decoder, last, **inputs, use_cache=False)
        return self.head(hidden)

    def _pass(self, inputs: Mapping[str, torch.Tensor], device: torch.device):
        """What runs the decoder: its fused pass where ``options.fused_layers`` applies (text
        inputs; float32 weights, or low-precision ones on the ``mixed`` path, whose arithmetic
        it shares), else the decoder itself. The fused pass computes attention itself where
        this reranker would pick SDPA's math kernel (``cpu_training_attention``)."""
        if not self.options.fused_layers or set(inputs) - {"input_ids", "attention_mask"}:
            return self.decoder
        if not self.options.mixed and self.decoder.get_input_embeddings().weight.dtype in LOW_PRECISION:
            return self.decoder
        explicit = device.type == "cpu" and self.training and self.options.cpu_training_attention == "math"
        # short passes whose token count changes every step: training on a CPU (cuBLAS builds
        # nothing per shape; an evaluation pass is hundreds to thousands of rows, measured even)
        multiple = self.options.token_multiple or (8 if device.type == "cpu" and self.training else 1)
        return fused_decoder(self.decoder, explicit_attention=explicit, compiled=self.layers_compiled(device),
                             token_multiple=multiple, read_only=self.options.read_only_last_layer,
                             banded=self.options.banded_attention) or self.decoder

    def layers_compiled(self, device: torch.device | None = None) -> bool:
        """Whether a fused pass run now (this mode, this grad mode, on ``device``: the model's
        by default) compiles its layers: :attr:`ScoringOptions.compiled_layers`, ``None`` resolved."""
        device = device or self.model_device()
        if self.options.compiled_layers is not None:
            return self.options.compiled_layers
        # eval mode and no gradients: a training-mode pass without them (the first pass of the
        # constant-memory step) must score as its pass with them does. Low-precision weights
        # only: with float32 products the fused elementwise kernels save too little to pay
        # for the compile (docs/performance.md, session 14); and a job long enough to win back
        # a cold compile (session 26)
        return (device.type == "cpu" and not self.training and not torch.is_grad_enabled()
                and self.options.job_tokens >= self.options.compile_from_tokens
                and self.decoder.get_input_embeddings().weight.dtype in LOW_PRECISION and can_compile(device))

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The decoder's pass under autocast to its weights' dtype where ``options.mixed``
        applies (low-precision frozen weights, float32 adapters); otherwise nothing."""
        dtype = self.decoder.get_input_embeddings().weight.dtype
        if not self.options.mixed or dtype not in LOW_PRECISION:
            return contextlib.nullcontext()
        # peft casts each adapter's input to the adapter's dtype (bf16 activations -> float32)
        # and the sum back, then scales and adds in separate kernels; under autocast the fused
        # LoRA layers (urlkit.model.lora.fuse_lora) add the adapter's product into the base
        # projection's output in one addmm_ instead (docs/performance.md)
        fuse_lora(self.decoder)
        return torch.autocast(device.type, dtype=dtype)

    def _attention(self, device: torch.device) -> contextlib.AbstractContextManager:
        """SDPA's math kernel for a training-mode pass on the CPU (``cpu_training_attention``;
        both passes of the constant-memory step, so they compute the same scores). Not with
        gradient checkpointing: its recomputation runs in the backward pass, outside this
        context, and must use the kernel of the forward."""
        if (device.type != "cpu" or not self.training or self.options.cpu_training_attention == "default"
                or getattr(self.decoder, "gradient_checkpointing", False)):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)

    def model_device(self) -> torch.device:
        """Where the model runs: batches collated on the CPU (evaluation, ``urlkit.rerank``)
        are moved there."""
        return next(self.decoder.parameters()).device

    def shares_prefixes(self) -> bool:
        """Whether a text batch shares its prompts' prefixes in the current mode (training or
        eval) on the model's device: :attr:`ScoringOptions.share_prefix`, ``None`` resolved."""
        if self.options.share_prefix is not None:
            return self.options.share_prefix
        return self.training or self.model_device().type == "cpu"

    def _can_share(self, inputs: Mapping[str, torch.Tensor]) -> bool:
        checkpointing = self.training and getattr(self.decoder, "gradient_checkpointing", False)
        return self.shares_prefixes() and not self.is_vision_language and not checkpointing and set(inputs) == {
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

