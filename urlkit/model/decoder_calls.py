"""How urlkit calls a decoder stack (transformers' ``LlamaModel``, ``Qwen3Model``, ... or urlkit's
fused pass): the keyword of its key/value cache, a cache gathered to some rows, and the states
of the tokens a caller reads. Pure torch; imports nothing of urlkit."""

from __future__ import annotations

import copy
import functools
import inspect

import torch


@functools.cache
def _parameters(call) -> frozenset[str]:
    return frozenset(inspect.signature(call).parameters)


def _call_parameters(decoder) -> frozenset[str]:
    return _parameters(type(decoder).forward if isinstance(decoder, torch.nn.Module) else type(decoder).__call__)


def cache_keyword(decoder) -> str:
    """The keyword ``decoder`` takes its key/value cache by: ``cache`` (transformers 5.2x, where
    ``past_key_values`` is deprecated, and urlkit's fused pass) or ``past_key_values`` (earlier
    transformers). A decoder returns its cache by the same name."""
    return "cache" if "cache" in _call_parameters(decoder) else "past_key_values"


def gathered(cache, rows: torch.Tensor):
    """A new cache holding ``rows`` of ``cache`` (shallow copies of its layers, so the
    original stays intact for the next bucket; any layer type keeps its own behaviour)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(rows)
    return out


def states_at(decoder, read: torch.Tensor, **call):
    """``decoder(**call)`` and the final hidden states of the tokens at ``read``, flat indices
    (row * width + column) into its (rows, width) input: (len(read), hidden). A decoder that
    takes ``read`` (urlkit's fused pass) computes its last layer's output for those tokens only;
    any other computes every token's and the states are gathered from them."""
    if "read" in _call_parameters(decoder):
        out = decoder(**call, read=read)
        return out, out.last_hidden_state
    out = decoder(**call)
    return out, out.last_hidden_state.flatten(0, 1)[read]
