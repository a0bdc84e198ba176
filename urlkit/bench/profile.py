"""Where a step's time goes: torch.profiler by operator, and the decoder's forward by module.

    profile_summary(run) -> Profile   # run() once under the profiler (after a warm-up call)

By operator: self CPU (or CUDA) time per aten operator, forward and backward together.
By module: every submodule of the decoder whose name says what it is (the frozen base
projections, LoRA's A and B products and dropout, the RMS norms, the rotary embedding, the
activation) is wrapped in a ``record_function`` range for the profiled call; the LoRA layer's
own total minus its parts is its glue (dtype casts, scaling, the add), the attention module's
total minus its projections is the attention core (rotary application, SDPA, reshapes). The
fused decoder pass (urlkit.model.fused_decoder) calls no layer's forward: its functions are
wrapped instead (``FUSED_PARTS``). The backward pass and the optimizer have no ranges: they
show as the operators' rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

# last component of a module's name -> the part of the model it is
PARTS = {
    "base_layer": "frozen projections (W x)",
    "lora_A": "LoRA products (A x, B A x)",
    "lora_B": "LoRA products (A x, B A x)",
    "lora_dropout": "LoRA dropout",
    "input_layernorm": "RMS norms",
    "post_attention_layernorm": "RMS norms",
    "norm": "RMS norms",
    "rotary_emb": "rotary embedding (cos, sin)",
    "act_fn": "MLP activation",
}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Profile:
    seconds: float  # profiled wall time of the call
    operators: list[tuple[str, float]]  # (aten operator, share of the self time), largest first
    modules: list[tuple[str, float]]  # (part of the decoder's forward, share of the self time)


def _label(name: str, module: torch.nn.Module) -> str | None:
    parts = name.split(".")
    last = parts[-1]
    if last in PROJECTIONS:
        kind = "attention" if last in PROJECTIONS[:4] else "MLP"
        return f"{kind} projections (total)" if hasattr(module, "base_layer") else "frozen projections (W x)"
    if last == "self_attn":
        return "attention module (total)"
    if len(parts) >= 2 and parts[-2] in ("lora_A", "lora_B", "lora_dropout"):
        return PARTS[parts[-2]]  # the adapter's member module (ModuleDict entry "default")
    if last in ("lora_A", "lora_B", "lora_dropout"):
        return None
    return PARTS.get(last)


def _ranges(decoder: torch.nn.Module) -> contextlib.ExitStack:
    """Hooks that open a ``record_function`` range around each labelled module's forward."""
    stack = contextlib.ExitStack()
    for name, module in decoder.named_modules():
        label = _label(name, module)
        if label is None:
            continue
        holder: list = []

        def pre(_module, _args, label=label, holder=holder):
            holder.append(record_function(f"part::{label}").__enter__())

        def post(_module, _args, _out, holder=holder):
            holder.pop().__exit__(None, None, None)

        stack.callback(module.register_forward_pre_hook(pre).remove)
        stack.callback(module.register_forward_hook(post).remove)
    return stack


# functions of the fused decoder pass (urlkit.model.fused_decoder, which calls no submodule's
# forward but the embedding's and the rotary embedding's): (owner within that module, "" for
# the module itself; attribute) -> the part of the model they are
FUSED_PARTS = {
    ("", "_project"): "projections with their adapters (q|k|v, o, gate|up, down)",
    ("", "_rms_norm"): "RMS norms",
    ("", "grouped_attention"): "attention core (training: float32, grouped heads)",
    ("F", "scaled_dot_product_attention"): "attention core (SDPA)",
}


def _fused_ranges(decoder: torch.nn.Module, compiled: bool) -> contextlib.ExitStack:
    """``record_function`` ranges around the fused pass's parts for the profiled call only
    (the functions are wrapped and put back after it; the pass itself carries no ranges).
    Nothing where ``decoder`` runs transformers' forward: its module ranges already hold SDPA;
    nothing where its layers are ``compiled``: their graphs inline these functions (wrapping
    them would recompile inside the profiled call); the operators still show the products."""
    import functools

    from urlkit.model import fused_decoder

    stack = contextlib.ExitStack()
    if compiled or fused_decoder.fused_decoder(decoder) is None:
        return stack
    for (owner_name, attribute), label in FUSED_PARTS.items():
        owner = getattr(fused_decoder, owner_name) if owner_name else fused_decoder
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def ranged(*args, _original=original, _label=label, **kwargs):
            with record_function(f"part::{_label}"):
                return _original(*args, **kwargs)

        setattr(owner, attribute, ranged)
        stack.callback(setattr, owner, attribute, original)
    return stack


def profile_summary(run: Callable[[], object], decoder: torch.nn.Module, top: int = 8, compiled: bool = False) -> Profile:
    """Profile one call of ``run`` (after one unprofiled warm-up call); ``compiled``: ``run``'s
    fused pass compiles its layers (``Reranker.layers_compiled``)."""
    import time

    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with _ranges(decoder), _fused_ranges(decoder, compiled), profile(activities=activities) as prof:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    events = prof.key_averages()
    ops = [(e.key, e.self_cpu_time_total) for e in events if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0  # all profiled CPU time
    ops.sort(key=lambda pair: -pair[1])
    parts = {e.key.removeprefix("part::"): e.cpu_time_total for e in events if e.key.startswith("part::")}
    # parts are nested: a LoRA layer holds its base projection, products and dropout; the
    # attention module holds its four projections
    modules = dict(parts)
    attention_projections = modules.pop("attention projections (total)", 0.0)
    lora_layers = attention_projections + modules.pop("MLP projections (total)", 0.0)
    if lora_layers:
        inside = sum(parts.get(k, 0.0) for k in ("frozen projections (W x)", "LoRA products (A x, B A x)", "LoRA dropout"))
        modules["LoRA glue (casts, scaling, add)"] = max(0.0, lora_layers - inside)
    if "attention module (total)" in modules:
        attention = modules.pop("attention module (total)")
        if not lora_layers:  # plain projections: their share of attention is not separable here
            attention_projections = 0.0
        modules["attention core (rotary, SDPA, reshapes)"] = max(0.0, attention - attention_projections)
    modules["everything else (backward, optimizer, loss, Python)"] = max(0.0, total - sum(modules.values()))
    shares = sorted(((k, v / total) for k, v in modules.items()), key=lambda pair: -pair[1])
    return Profile(seconds, [(k, t / total) for k, t in ops[:top]], shares)


def profile_section(table, args, cfg, data, built, dtype_label: str) -> None:
    """torch.profiler on one 1+4 training step and one evaluation batch of the main dtype:
    the top operators and the decoder's forward by part (urlkit/bench/profile.py)."""
    from urlkit.bench import evaluation, training
    from urlkit.bench.workload import compose_config, training_batches

    cfg_4 = compose_config(args.model, "data.n_negatives=4")
    batch = training_batches(cfg_4, data, built.renderer, 4, 1, device=torch.device(args.device))[0]
    stepper = training.Stepper(built.reranker, cfg_4)
    split = evaluation.subset(data.test, max(3, args.eval_queries // 4))
    eval_batch = evaluation.rerank_batches(built.renderer, split, data.test_ranking, int(cfg.eval.depth),
                                           int(cfg.eval.batch_size))[0]
    scorer = built.reranker.with_options()

    def score():
        scorer.eval()
        with torch.inference_mode():
            scorer(eval_batch)

    scorer.eval()
    with torch.inference_mode():
        compiled = scorer.layers_compiled()
    for what, run, layers_compiled in (
            (f"training 1+4 step, {dtype_label}", lambda: stepper(batch), False),
            (f"evaluation batch of {len(eval_batch['input_ids'])} prompts, {dtype_label}", score, compiled)):
        if layers_compiled:
            what += ", compiled layers"
        result = profile_summary(run, built.reranker.decoder, compiled=layers_compiled)
        section = f"profile: {what}"
        for name, share in result.operators[:6]:
            table.add(section, name, 100 * share, "% of CPU", f"self time; a profiled call: {result.seconds:.3g} s")
        for name, share in result.modules:
            table.add(section, f"forward part: {name}", 100 * share, "% of CPU", "")
