"""A Llama / Qwen3 decoder pass with fewer, larger operators: the same numbers as transformers' own.

On a CPU a training step of the embedded 135M model is short of matrix work and long on
operators: ~100 per layer and pass (three projections and their adapters apiece, rotary
embeddings for queries and keys apart, eight kernels per RMSNorm, dtype casts), each costing
tens of microseconds of dispatch and autograd bookkeeping, several times the product of a
576-wide matrix over 170 tokens (docs/performance.md, "Session 6"). This pass reads the
same parameters as ``LlamaModel.forward`` and computes the same function with fewer of them:

    q|k|v = x [Wq;Wk;Wv]^T  + s (x [Aq;Ak;Av]^T) blockdiag(Bq,Bk,Bv)^T    one product + one adapter add
    g|u   = x [Wg;Wu]^T     + s (x [Ag;Au]^T) blockdiag(Bg,Bu)^T
    rotary embeddings of q and k in one pass; RMSNorm as torch's fused ``rms_norm``

The frozen weights are concatenated once and kept (~12 ms a pass otherwise), rebuilt when one
of them is replaced, written in place (``Tensor._version``: ``lora_merged``, ``load_state_dict``)
or merged and unmerged by peft (which writes through ``.data``; so does nothing else in
urlkit: a frozen weight changed through ``.data`` by hand is not seen). The adapters' A and B are stacked per pass, so
their gradients reach peft's parameters as usual. Products run in the frozen weights' dtype
with float32 accumulation (bf16 weights: float32 adapters cast once per pass, as under
``ScoringOptions.mixed``); a float32 model runs in float32.

:func:`fused_decoder` returns ``None`` (the caller then runs transformers' forward) for
anything else: another architecture, biases, a LoRA variant, bias or dropout, several
adapters, wrapped layers (FSDP), gradient checkpointing. The call matches the subset of
``LlamaModel.forward`` that urlkit uses, key/value cache included (``KeyValues``), so
``urlkit.model.prefix_sharing`` runs either one. tests/model/test_fused_decoder.py holds
both to the same scores and gradients.

A layer is two functions of (tokens, hidden) tensors around its attention
(:func:`_attention_inputs`, :func:`_layer_output`: no module, no row, no cache), so
``torch.compile`` serves all layers and passes with one graph each (:func:`compiled_halves`),
whose elementwise work (norms, rotary embeddings, gate, residual adds, casts) inductor fuses
into a few kernels (``ScoringOptions.compiled_layers``: by default for a long evaluation on a CPU).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from urlkit.model.grouped_attention import attention_plan, grouped_attention
from urlkit.model.lora import vanilla_adapter

__all__ = ["FusedDecoder", "KeyValues", "fused_decoder"]


@dataclass
class DecoderOutput:
    last_hidden_state: torch.Tensor
    cache: KeyValues | None


class KeyValues:
    """Per layer (keys, values) of shape (rows, kv_heads, tokens, head_dim); the part of
    transformers' ``Cache`` that ``prefix_sharing`` uses (``layers``, ``batch_select_indices``)."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.layers = layers or []

    def batch_select_indices(self, rows: torch.Tensor) -> None:
        if all(keys.shape[0] == 1 for keys, _ in self.layers):  # one shared row: a view, not a copy
            # (the pass concatenates its own keys to it anyway)
            self.layers = [(keys.expand(len(rows), -1, -1, -1), values.expand(len(rows), -1, -1, -1))
                           for keys, values in self.layers]
            return
        self.layers = [(keys[rows], values[rows]) for keys, values in self.layers]

    def get_seq_length(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0


# concatenated frozen weights, kept across passes per decoder: {weight ids: (versions, tensor)}
_CONCATENATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Group:
    """Projections that read the same input, as one product: their frozen weights
    concatenated (kept in ``store`` across passes) and their adapters stacked, ``None`` for a
    projection without one; ``modules``: the projections themselves (plain or peft LoRA)."""

    linears: list[nn.Linear]
    adapters: list[tuple[nn.Linear, nn.Linear, float] | None]  # (A, B, scale) per projection
    store: dict
    modules: list[nn.Module]

    def base_weight(self) -> torch.Tensor:
        weights = [linear.weight for linear in self.linears]
        if len(weights) == 1:
            return weights[0]
        # rebuilt when a weight is replaced (data_ptr), written in place through autograd's view
        # (_version: copy_, lora_merged) or merged / unmerged by peft, which writes through .data
        # without a version bump (the module's merged adapters, or its type after merge_and_unload)
        key = tuple(id(w) for w in weights)
        states = tuple((w.data_ptr(), w._version, type(m), tuple(getattr(m, "merged_adapters", ())))
                       for w, m in zip(weights, self.modules, strict=True))
        kept = self.store.get(key)
        if kept is None or kept[0] != states:
            # a normal tensor even when first built under inference_mode (an evaluation), so
            # that a training pass may save it for its backward
            with torch.inference_mode(False), torch.no_grad():
                kept = self.store[key] = (states, torch.cat(weights))
        return kept[1]

    def operands(self, dtype: torch.dtype) -> Operands:
        """This pass's (weight, down, up) of :func:`_project`: the frozen weights concatenated,
        the adapters' A stacked and their B, scaled, block-diagonal, in ``dtype`` (``None``,
        ``None`` without adapters). The scale is in ``up``, not a float argument of the
        product: a float input would make ``torch.compile`` trace every new graph twice."""
        weight = self.base_weight()
        if all(adapter is None for adapter in self.adapters):
            return weight, None, None
        downs, ups = [], []
        for linear, adapter in zip(self.linears, self.adapters, strict=True):
            if adapter is None:  # rank 0: a block of zeros in the block-diagonal B
                downs.append(weight.new_zeros(0, linear.in_features))
                ups.append(weight.new_zeros(linear.out_features, 0))
                continue
            a, b, scale = adapter
            downs.append(a.weight)
            ups.append(b.weight * scale)
        down = torch.cat(downs).to(dtype) if len(downs) > 1 else downs[0].to(dtype)
        up = torch.block_diag(*ups).to(dtype) if len(ups) > 1 else ups[0].to(dtype)
        return weight, down, up


# (frozen weight, adapters' A stacked or None, their scaled B block-diagonal or None)
Operands = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _project(x: torch.Tensor, operands: Operands) -> torch.Tensor:
    """``x W^T + (x D^T) U^T``: a group's projections with their adapters."""
    weight, down, up = operands
    flat = x.reshape(-1, x.shape[-1])
    out = flat @ weight.t()
    if down is not None:
        # in place: out of place, addmm first copies the base product into a new tensor. Under an
        # autocast the pass does not open itself (Lightning's bf16-mixed over float32 weights)
        # the products come out in the autocast's dtype, which addmm_ (unlike addmm) does not
        # cast to: the adapter's up-projection follows them
        out.addmm_(flat @ down.t(), up.t().to(out.dtype))
    return out.view(*x.shape[:-1], out.shape[-1])


def _linear_and_adapter(module: nn.Module):
    """(base Linear, (A, B, scale) or None) of a plain Linear or a peft LoRA Linear whose one
    active adapter is plain LoRA without dropout or bias; ``None`` when neither."""
    if type(module) is nn.Linear:
        return (module, None) if module.bias is None else None
    base = getattr(module, "base_layer", None)
    if base is None or type(base) is not nn.Linear or base.bias is not None:
        return None
    if module.merged or module.disable_adapters:
        return base, None
    adapter = vanilla_adapter(module)
    if adapter is None or not isinstance(module.lora_dropout[adapter], nn.Identity):
        return None
    return base, (module.lora_A[adapter], module.lora_B[adapter], float(module.scaling[adapter]))


def _group(modules: list[nn.Module], store: dict) -> _Group | None:
    parts = [_linear_and_adapter(m) for m in modules]
    if any(part is None for part in parts):
        return None
    return _Group([linear for linear, _ in parts], [adapter for _, adapter in parts], store, modules)


class FusedDecoder:
    """``FusedDecoder(decoder)(input_ids, attention_mask, position_ids, cache)``:
    ``decoder``'s pass (a ``LlamaModel`` or ``Qwen3Model``) with fused operators; see the
    module docstring."""

    def __init__(self, decoder: nn.Module, groups: list[tuple[_Group, _Group, _Group, _Group]],
                 explicit_attention: bool = False, compiled: bool = False, token_multiple: int = 1,
                 read_only: bool = True, banded: bool = True) -> None:
        self.decoder = decoder
        self.read_only = read_only  # the last layer's output half for the read tokens only (False: all, then gathered)
        self.token_multiple = token_multiple  # a pass's tokens go through the layers rounded up to a multiple
        self.groups = groups  # per layer: (q|k|v, o, gate|up, down)
        self.explicit_attention = explicit_attention  # grouped_attention instead of SDPA
        self.banded = banded  # the explicit attention banded where that saves enough (else dense)
        config = decoder.config
        heads = config.num_attention_heads
        self.shape = LayerShape(heads, config.num_key_value_heads,
                                getattr(config, "head_dim", None) or config.hidden_size // heads,
                                float(decoder.layers[0].self_attn.scaling), float(decoder.norm.variance_epsilon))
        # the layer before and after its attention: eager, or compiled (one pair a model shape)
        self.halves = compiled_halves(self.shape) if compiled else (
            functools.partial(_attention_inputs, shape=self.shape), functools.partial(_layer_output, shape=self.shape))

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, cache: KeyValues | None = None,
                 use_cache: bool = False, read: torch.Tensor | None = None) -> DecoderOutput:
        """``read``: the flat indices (row * width + column) of the tokens whose states the caller
        reads; the last layer's output half and the final norm then run for those alone (the rest
        of that layer feeds nothing but its keys and values) and ``last_hidden_state`` is
        (len(read), hidden). ``None``: every token, (rows, width, hidden)."""
        if read is not None and not self.read_only:
            out = self(input_ids, attention_mask, position_ids, cache, use_cache)
            return DecoderOutput(out.last_hidden_state.flatten(0, 1)[read], out.cache)
        decoder = self.decoder
        hidden = decoder.embed_tokens(input_ids)
        rows, width = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(width, device=input_ids.device) + past)[None].expand(rows, -1)
        mask = _attention_mask(attention_mask, rows, width, past, input_ids.device, explicit=self.explicit_attention)
        heads, kv_heads, head_dim = self.shape.heads, self.shape.kv_heads, self.shape.head_dim
        plan = attention_plan(mask, heads, kv_heads, self.token_multiple, banded=None if self.banded else False) \
            if self.explicit_attention else None
        if mask is not None and plan is None:  # additive, once a pass: SDPA converts a boolean mask
            # in every layer (the same numbers: 0 or -inf added; ~10% of an evaluation's attention)
            mask = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
        cos, sin = decoder.rotary_emb(hidden, position_ids=position_ids)
        half = head_dim // 2
        # rotate_half(x) * sin == (x's halves swapped) * [-sin_1, sin_2]: the sign once a pass (an
        # addcmul in the layer would save a kernel but is farther from float32 in bf16: 1.5x the gradient error)
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        tokens = rows * width
        cos, sin = cos.reshape(tokens, 1, -1), sin.reshape(tokens, 1, -1)  # broadcast over heads
        hidden = hidden.view(tokens, -1)  # the halves work on tokens: a batch's rows do not matter to them
        # the halves' products see a multiple of token_multiple rows (zero rows appended, dropped
        # before the attention): oneDNN builds a matrix kernel for every new row count, ~1.5 ms
        # each and ~29 a training step, whose token count changes every step (docs/performance.md)
        padding = -tokens % self.token_multiple
        if padding:
            hidden, cos, sin = (F.pad(t, (0, 0) * (t.dim() - 1) + (0, padding)) for t in (hidden, cos, sin))
        kept = [] if use_cache else None  # this pass's keys and values, the cache it returns
        dtype = hidden.dtype
        before, after = self.halves
        layers = decoder.layers[: decoder.config.num_hidden_layers]
        for index, layer in enumerate(layers):
            attn = layer.self_attn
            qkv, out, gate_up, down = (group.operands(dtype) for group in self.groups[index])
            head_norms = (attn.q_norm.weight, attn.k_norm.weight) if getattr(attn, "q_norm", None) is not None else None
            queries, keys, values = before(hidden, cos, sin, qkv, layer.input_layernorm.weight, head_norms)
            queries = queries[:tokens].view(rows, width, heads, head_dim).transpose(1, 2)
            keys = keys[:tokens].view(rows, width, kv_heads, head_dim).transpose(1, 2)
            values = values[:tokens].view(rows, width, kv_heads, head_dim).transpose(1, 2)
            if past:
                past_keys, past_values = cache.layers[index]
                keys, values = torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)
            if kept is not None:
                kept.append((keys, values))
            reads_here = read is not None and index == len(layers) - 1  # the last layer of a pass told what is read
            if reads_here and not len(read):  # only the cache is read
                return DecoderOutput(hidden.new_zeros(0, hidden.shape[-1]), KeyValues(kept) if kept is not None else None)
            if plan is not None:
                attended = grouped_attention(queries, keys, values, plan, self.shape.scaling, kv_heads)
            else:
                attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=self.shape.scaling,
                                                          is_causal=mask is None, enable_gqa=kv_heads != heads)
            attended = attended.transpose(1, 2).reshape(tokens, heads * head_dim)
            if reads_here:
                hidden = _read_states(hidden[read], attended[read], out, gate_up, down,
                                      layer.post_attention_layernorm.weight, decoder.norm.weight, self.shape)
                return DecoderOutput(hidden, KeyValues(kept) if kept is not None else None)
            if padding:
                attended = F.pad(attended, (0, 0, 0, padding))
            hidden = after(hidden, attended, out, gate_up, down, layer.post_attention_layernorm.weight)
        hidden = _rms_norm(hidden[:tokens].view(rows, width, -1), decoder.norm.weight, self.shape.eps)
        return DecoderOutput(hidden, KeyValues(kept) if kept is not None else None)


class LayerShape(NamedTuple):
    """What a layer needs of the config: its halves' constants under ``torch.compile`` and the
    attention's scale, which runs between them."""

    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    eps: float  # of every RMSNorm of the model


def _attention_inputs(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, qkv: Operands,
                      norm: torch.Tensor, head_norms: tuple[torch.Tensor, torch.Tensor] | None,
                      shape: LayerShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer up to its attention, over (tokens, hidden) rows: the normalised input's q|k|v
    product, rotary embeddings of the queries and keys ((tokens, 1, head_dim) ``cos`` and
    ``sin``, the latter carrying ``rotate_half``'s sign). (tokens, heads, head_dim) queries,
    (tokens, kv_heads, head_dim) keys and values."""
    heads, kv_heads, head_dim = shape.heads, shape.kv_heads, shape.head_dim
    half = head_dim // 2
    x = _rms_norm(hidden, norm, shape.eps)
    # split, not sliced: the backward of a split is one cat, that of each slice a zero
    # tensor of the whole width to copy into (and the slices' gradients added up)
    qk, values = _project(x, qkv).split([(heads + kv_heads) * head_dim, kv_heads * head_dim], dim=-1)
    qk = qk.view(-1, heads + kv_heads, head_dim)
    if head_norms is not None:  # Qwen3: RMSNorm of every head's query and key
        weight = torch.cat([head_norms[0].expand(heads, -1), head_norms[1].expand(kv_heads, -1)])
        qk = _rms_norm(qk, weight, shape.eps)
    # a cat of the swapped halves, not roll(): the same numbers, and inductor compiles roll
    # into a kernel 5x slower than eager's
    qk = qk * cos + torch.cat([qk[..., half:], qk[..., :half]], dim=-1) * sin
    queries, keys = qk.split([heads, kv_heads], dim=1)
    return queries, keys, values.view(-1, kv_heads, head_dim)


def _layer_output(hidden: torch.Tensor, attended: torch.Tensor, out: Operands, gate_up: Operands, down: Operands,
                  norm: torch.Tensor, shape: LayerShape) -> torch.Tensor:
    """A layer after its attention, over (tokens, hidden) rows: the output projection and
    residual, then the normalised MLP (SiLU gate) and residual. ``attended``: (tokens, heads *
    head_dim)."""
    hidden = hidden + _project(attended, out)
    x = _rms_norm(hidden, norm, shape.eps)
    gate, up = _project(x, gate_up).chunk(2, dim=-1)
    return hidden + _project(F.silu(gate) * up, down)


def _read_states(hidden: torch.Tensor, attended: torch.Tensor, out: Operands, gate_up: Operands, down: Operands,
                 norm: torch.Tensor, final_norm: torch.Tensor, shape: LayerShape) -> torch.Tensor:
    """The last layer's output half and the final norm for the tokens a caller reads (their
    rows of ``hidden`` and ``attended``): no other token's output is read, so ~84% of that
    layer's products are skipped for them. Eager: its rows are the batch's prompts, not tokens."""
    return _rms_norm(_layer_output(hidden, attended, out, gate_up, down, norm, shape), final_norm, shape.eps)


@functools.cache
def compiled_halves(shape: LayerShape):
    """:func:`_attention_inputs` and :func:`_layer_output` of models of ``shape`` under
    ``torch.compile`` (inductor), the number of tokens dynamic: the halves see neither rows
    nor caches, so every layer of every pass runs the same two graphs, compiled once a process,
    not per layer, width, batch or kind of pass. Their elementwise work (norms, rotary
    embeddings, the gate, residual adds, casts) runs as fused kernels; the products are the
    same ``mm`` calls; attention runs between them as it does eagerly."""
    # closures, not partials: torch.compile keys its graphs by code object, and every partial
    # shares one wrapper (the two halves would count as recompiles of one function)
    @torch.compile
    def before(hidden, cos, sin, qkv, norm, head_norms):
        return _attention_inputs(hidden, cos, sin, qkv, norm, head_norms, shape)

    @torch.compile
    def after(hidden, attended, out, gate_up, down, norm):
        return _layer_output(hidden, attended, out, gate_up, down, norm, shape)

    def attention_inputs(hidden, cos, sin, qkv, norm, head_norms):
        for tensor in (hidden, cos, sin):  # only the token count varies: dynamic from the first call
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return before(hidden, cos, sin, qkv, norm, head_norms)

    def layer_output(hidden, attended, out, gate_up, down, norm):
        for tensor in (hidden, attended):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return after(hidden, attended, out, gate_up, down, norm)

    return attention_inputs, layer_output


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm``: normalised in float32, rounded to x's dtype, then scaled by the weight
    (in the weight's dtype, as transformers does)."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)
    return weight * normed


def _attention_mask(mask: torch.Tensor | None, rows: int, width: int, past: int, device,
                    explicit: bool = False) -> torch.Tensor | None:
    """SDPA's boolean mask (rows, 1, width, past + width), True = attend; ``None`` = plain
    causal (``explicit``: never None, the causal mask spelt out). A 4D mask is taken as it is; a 2D one marks the real keys (past ones included),
    made causal by index as transformers' ``create_causal_mask`` does. Every query also sees
    itself: a padding query with no key at all would give NaN, and NaN values at a padding
    key would reach the real queries through their zero weights."""
    if mask is not None and mask.dim() == 4:
        return mask.bool()
    if not explicit and past == 0 and (mask is None or bool(mask.all())):
        return None
    if mask is None:
        mask = torch.ones(rows, past + width, dtype=torch.bool, device=device)
    queries = torch.arange(width, device=device) + past
    keys = torch.arange(past + width, device=device)
    causal = keys[None, :] <= queries[:, None]
    itself = keys[None, :] == queries[:, None]
    return (mask.bool()[:, None, None, :] & causal) | itself


# decoder -> its layers' class: the architectures whose forward this pass reproduces
# (Qwen3 = Llama + an RMSNorm of every query and key head)
SUPPORTED = {"LlamaModel": "LlamaDecoderLayer", "Qwen3Model": "Qwen3DecoderLayer"}


def fused_decoder(decoder: nn.Module, explicit_attention: bool = False, compiled: bool = False,
                  token_multiple: int = 1, read_only: bool = True, banded: bool = True) -> FusedDecoder | None:
    """The fused pass of ``decoder`` when it is a plain transformers ``LlamaModel`` or
    ``Qwen3Model`` (full attention) whose projections are Linear layers without bias, plain or
    with one plain LoRA adapter; ``None`` otherwise (run ``decoder`` itself).
    ``explicit_attention``: attention as ``urlkit.model.grouped_attention`` (what SDPA's math
    kernel computes, in fewer kernels: training on a CPU) instead of
    ``scaled_dot_product_attention`` (its fused kernels). ``compiled``: each layer's halves
    through :func:`compiled_halves`. ``token_multiple``: the layers' products see the pass's
    tokens rounded up to a multiple (zero rows), the explicit attention its width and keys.
    ``read_only``: a call given the tokens it ``read``s computes its last layer's output for
    those alone (else for all, then gathered). ``banded``: the explicit attention of a packed
    row by prefix and band where that saves enough (``urlkit.model.grouped_attention``)."""
    layer_class = SUPPORTED.get(type(decoder).__name__)
    if layer_class is None or (decoder.training and getattr(decoder, "gradient_checkpointing", False)):
        return None
    config = decoder.config
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "attention_bias", False) \
            or getattr(config, "mlp_bias", False) or getattr(config, "pretraining_tp", 1) != 1:
        return None
    groups, store = [], _CONCATENATED.setdefault(decoder, {})
    for layer in decoder.layers[: config.num_hidden_layers]:
        if type(layer).__name__ != layer_class:  # wrapped (FSDP) or replaced
            return None
        attn, mlp = layer.self_attn, layer.mlp
        if (attn.training and attn.attention_dropout) or getattr(attn, "sliding_window", None) is not None:
            return None
        layer_groups = (_group([attn.q_proj, attn.k_proj, attn.v_proj], store), _group([attn.o_proj], store),
                        _group([mlp.gate_proj, mlp.up_proj], store), _group([mlp.down_proj], store))
        if any(group is None for group in layer_groups):
            return None
        groups.append(layer_groups)
    return FusedDecoder(decoder, groups, explicit_attention, compiled, token_multiple, read_only, banded)
