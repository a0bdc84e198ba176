"""A trained reranker written as a standard checkpoint folder (``python -m urlkit.export``).

    <out>/config.json, model.safetensors        the causal LM, LoRA merged, in its stored dtype
    <out>/tokenizer*, chat_template.jinja       the tokenizer; its chat template writes urlkit's
                                                prompt for a (query, document) pair
    <out>/modules.json, 1_LogitScore/, ...      sentence-transformers CrossEncoder modules
    <out>/urlkit_reranker.json                  yes/no tokens, prompt format, instruction, score
    <out>/README.md                             the model card

The score is urlkit's: the head reads the K gathered LM-head rows at the prompt's last token
(``urlkit.model.heads``), and ``relevance`` turns them into logit(yes) - logit(no) (direction
sft) or logit(yes) (direction cl). The merged model's full LM head gives the same two logits
(written without Gemma 2's final_logit_softcapping, which urlkit's rows do not apply),
so sentence-transformers' ``LogitScore(yes_id, no_id)`` (or ``LogitScore(yes_id)``) and a plain
``AutoModelForCausalLM`` score exactly what urlkit scores, on the exact prompt (the chat template
is built from urlkit's renderer, see ``PromptRenderer.pair_chat_template``).

Not exportable as such (a clear error): ``direction=rand`` (a random projection, not LM-head
rows), an expanded token set (``head.num_tokens > 2``: its relevance is a log-sum-exp over K
tokens), a trainable LM-head copy (``head.trainable``) and vision-language backbones.

Merging: every LoRA adapter is folded into its base weight in float32 and the result is cast
back to the backbone's stored dtype (float32 for the embedded SmolLM2: exact to float rounding).
A bfloat16 folder differs from urlkit by more than the merged weights' rounding: loaded as
stored, it computes the LM head and its logits in bfloat16, so its scores fall on bfloat16's grid
(urlkit reads the yes/no rows in float32); loading it in float32 takes them off the grid (the
card says so and how). sentence-transformers is needed to write the CrossEncoder modules (the ``export``,
``bench`` and ``dev`` extras install it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from urlkit.atomic import process_alive
from urlkit.errors import UrlkitError

EXPORT_INFO = "urlkit_reranker.json"


class ExportError(UrlkitError, ValueError):
    """A run that cannot be written as a standard reranker; the message says why."""


@dataclass
class ExportSpec:
    """What the folder records besides the weights."""

    direction: str
    token_ids: list[int]
    tokens: list[str]
    prompt: dict[str, Any]
    instruction: str
    max_length: int
    dtype: str
    base_model: str | None  # the hub id the weights came from (None: not a hub model)
    run: dict[str, Any] = field(default_factory=dict)  # source run: weight, data, steps, metrics
    model_config: str = ""  # urlkit's model config (model.name)
    # where the base weights came from (run.json base_model): a hub id's commit, a folder's path
    base_origin: dict[str, Any] = field(default_factory=dict)


def check_exportable(reranker: Any, backbone: Any, direction: str, token_ids: Sequence[int]) -> None:
    """Raise :class:`ExportError` when LogitScore on the merged LM head would not be urlkit's score."""
    from urlkit.model.heads import LMHeadRows

    if getattr(backbone, "is_vision_language", False) or getattr(backbone, "processor", None) is not None:
        raise ExportError("export writes text rerankers only: this run's backbone is vision-language "
                          "(images need the processor's prompt path, not a CrossEncoder text pair)")
    if direction not in ("sft", "cl"):
        raise ExportError(f"direction={direction}: its scores come from a random projection, not from "
                          "the LM head, so no standard causal LM scores them; export needs sft or cl")
    if not isinstance(reranker.head, LMHeadRows):
        raise ExportError(f"the head {type(reranker.head).__name__} is not LM-head rows")
    if reranker.head.trainable:
        raise ExportError("head.trainable=true: the trained rows are a copy apart from the LM head "
                          "(tied to the input embeddings here), so the merged model would not score them")
    if direction == "sft" and len(token_ids) != 2:
        raise ExportError(f"head.num_tokens={len(token_ids)}: an expanded token set scores "
                          "logit(yes) - logsumexp(others), which LogitScore(yes, no) cannot express; "
                          "export needs the two tokens yes/no (head.num_tokens=2)")


def merged_causal_lm(reranker: Any, backbone: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The backbone's causal LM with every LoRA adapter folded in (float32 sum, then ``dtype``)
    and the peft wrappers replaced by their base layers. Changes the model in place."""
    from urlkit.model.lora import lora_layers

    model = backbone.model.get_base_model() if hasattr(backbone.model, "get_base_model") else backbone.model
    with torch.no_grad():
        for layer in lora_layers(model):
            base = layer.get_base_layer()
            if not layer.merged:
                base.weight.data = base.weight.data.float()
                layer.merge()
            base.weight.data = base.weight.data.to(dtype)
    from peft.tuners.lora import LoraLayer

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                setattr(module, child_name, child.get_base_layer())
    left = lora_layers(model)
    if left:
        raise ExportError(f"{len(left)} LoRA layers could not be unwrapped after merging")
    model.to(dtype)
    return model.eval()


def write_folder(reranker: Any, renderer: Any, backbone: Any, spec: ExportSpec, out: str | Path) -> Path:
    """Write the folder described at the top of this module; returns its path."""
    check_exportable(reranker, backbone, spec.direction, spec.token_ids)
    try:
        import sentence_transformers.cross_encoder.modules  # noqa: F401 - imported to check it is there
    except ImportError as err:
        raise ExportError("export writes sentence-transformers CrossEncoder modules: install it with "
                          "pip install 'sentence-transformers>=5' (or urlkit's export extra)") from err

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {out} exists and is not empty; give a new folder")
    # Written in a hidden sibling and renamed to ``out`` when complete: an export that fails or
    # is killed midway leaves no half folder under ``out`` (the weights without the CrossEncoder
    # modules still load, as a CrossEncoder with a sigmoid over the score) and a rerun is not refused.
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.export-tmp"):  # left by an export that was killed
        if not process_alive(stale.name.removesuffix(".export-tmp").rpartition(".")[2]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.export-tmp"
    try:
        _write_files(reranker, renderer, backbone, spec, staging, card_folder=out.resolve())
        try:
            os.replace(staging, out)  # onto nothing, or onto an empty folder
        except OSError as err:
            if not (out.is_dir() and not any(out.iterdir())):
                raise ExportError(f"--out {out}: could not move the written folder there ({err})") from err
            # an empty folder that cannot be replaced (a mount point, a container's volume): the
            # complete files are moved into it, the last step of a failed export that leaves them
            for item in sorted(staging.iterdir()):
                shutil.move(str(item), str(out / item.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_files(reranker: Any, renderer: Any, backbone: Any, spec: ExportSpec, out: Path, card_folder: Path) -> None:
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.cross_encoder.modules import LogitScore

    from urlkit.model.backbone import parse_dtype

    out.mkdir()
    tokenizer = backbone.tokenizer
    original_template = tokenizer.chat_template
    tokenizer.chat_template = renderer.pair_chat_template(spec.instruction)
    try:
        model = merged_causal_lm(reranker, backbone, parse_dtype(spec.dtype))
        model.config.use_cache = True
        # Gemma 2's final_logit_softcapping writes cap * tanh(logit / cap) as the logits; urlkit's
        # score reads the LM-head rows uncapped, so the folder's logits are written uncapped too
        if getattr(model.config, "final_logit_softcapping", None) is not None:
            model.config.final_logit_softcapping = None
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.chat_template = original_template
    transformer = Transformer(str(out), transformer_task="text-generation", max_seq_length=spec.max_length,
                              model_kwargs={"dtype": parse_dtype(spec.dtype)})
    yes = spec.token_ids[0]
    no = spec.token_ids[1] if spec.direction == "sft" else None
    cross_encoder = CrossEncoder(modules=[transformer, LogitScore(yes, no)], device="cpu",
                                 activation_fn=torch.nn.Identity())
    # Left padding recorded in tokenizer_config.json, so a plain AutoTokenizer reads the score at
    # index -1 too (save_pretrained keeps only what init_kwargs holds).
    transformer.tokenizer.padding_side = "left"
    transformer.tokenizer.init_kwargs["padding_side"] = "left"
    cross_encoder.save(str(out))
    (out / EXPORT_INFO).write_text(json.dumps(export_info(spec), indent=2) + "\n")
    (out / "README.md").write_text(model_card(spec, card_folder))


def export_info(spec: ExportSpec) -> dict[str, Any]:
    no = {"token": spec.tokens[1], "id": spec.token_ids[1]} if spec.direction == "sft" else None
    return {
        "format": "urlkit-reranker/1",
        "score": "logit(yes) - logit(no)" if spec.direction == "sft" else "logit(yes)",
        "yes": {"token": spec.tokens[0], "id": spec.token_ids[0]},
        "no": no,
        "prompt": spec.prompt,
        "instruction": spec.instruction,
        "max_length": spec.max_length,
        "dtype": spec.dtype,
        "base_model": spec.base_model,
        "base_model_origin": spec.base_origin,
        "model_config": spec.model_config,
        "run": spec.run,
    }


def base_line(spec: ExportSpec) -> str:
    """The card's words for the base weights: a hub id at its commit, a local folder, urlkit's
    own config (the embedded GGUF: its package's version)."""
    origin = spec.base_origin
    if spec.base_model:
        commit = origin.get("revision")
        at = f" at revision `{commit}`" if commit else " (revision not recorded)"
        merged = origin.get("merged_into_revision")
        return f"`{spec.base_model}`{at}" + (f", merged into revision `{merged}` at export" if merged else "")
    if origin.get("source") == "folder":
        return f"the local model folder `{origin.get('path')}` (not a hub model)"
    package = f", {origin['package']} {origin.get('revision')}" if origin.get("package") else ""
    if origin.get("merged_into_revision") and origin.get("package"):
        package += f", merged into {origin['package']} {origin['merged_into_revision']} at export"
    return f"urlkit's model config `{spec.model_config}` (not a hub model{package})"


_CARD_PAIRS = [("where do cats sleep", "Cats sleep in warm places."), ("where do cats sleep", "A saw cuts wood.")]


def model_card(spec: ExportSpec, folder: str | Path = "<this folder>") -> str:
    """The README.md of the folder: how to load it, what the score is, where it came from. Its
    code blocks run as written (``folder``: where they load the model from; tested)."""
    yes, no = spec.token_ids[0], (spec.token_ids[1] if spec.direction == "sft" else None)
    score = "logits[:, -1, yes] - logits[:, -1, no]" if no is not None else "logits[:, -1, yes]"
    run = spec.run
    metrics = run.get("metrics") or {}
    rows = "\n".join(f"| {key} | {value:.4f} |" for key, value in sorted(metrics.items())
                     if isinstance(value, (int, float)))
    instruction = spec.instruction or spec.prompt.get("default_instruction") or ""
    from urlkit.data.prompts import document_lead

    lead = document_lead(spec.prompt.get("template", ""))
    pairs = _CARD_PAIRS
    bf16 = "" if spec.dtype not in ("bfloat16", "bf16") else """
Stored in bfloat16: loaded as stored, the model computes its LM head and logits in bfloat16, so
the scores fall on bfloat16's grid (each logit rounded to 8 significant bits; on urlkit's tiny bf16
test run up to 5.9e-3 from urlkit, whose scores read the yes/no rows in float32). For scores closer
to urlkit's, load it in float32: `CrossEncoder(folder, model_kwargs={"dtype": torch.float32})` or
`AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)` (1.0e-3 from urlkit on that run;
the rest is urlkit's decoder running in bfloat16).
"""
    base = base_line(spec)
    steps = run.get("steps", "?")
    stopped = run.get("status", "finished") != "finished"
    if stopped:  # an unfinished run exported on purpose (--allow-unfinished)
        steps = f"interrupted at step {steps} of {run.get('max_steps', '?')} (run.json status {run.get('status')!r})"
    return f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [cross-encoder, reranker, urlkit]
{f"base_model: {spec.base_model}" + chr(10) if spec.base_model else ""}---

# {run.get("name", "urlkit reranker")}

A point-wise yes/no reranker trained with urlkit (the Unified Reranking Loss, Dai et al. 2025:
weight `{run.get("weight", "?")}`, direction `{spec.direction}`) from {base}, LoRA merged,
stored in {spec.dtype}. Score of a (query, document) pair: the log-odds `{score}` at the
prompt's last token ({spec.tokens[0]!r} = id {yes}{f", {spec.tokens[1]!r} = id {no}" if no is not None else ""}), the
same number `urlkit.rerank` gives (higher = more relevant; a sigmoid makes it a probability).
{bf16}{chr(10) + "**Unfinished training run**: " + steps + "." + chr(10) if stopped else ""}
## Use

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder({str(folder)!r})  # this folder (or its hub id once uploaded)
pairs = {pairs!r}
scores = model.predict(pairs)  # another instruction than the trained one: prompt="Find the passage."
print(scores.tolist())
```

With plain transformers (the tokenizer's chat template writes the prompt for the roles
`query` and `document`; a `system` message replaces the instruction). Like urlkit, it cuts only
the document to fit {spec.max_length} tokens, so the instruction, the query and the answer position
(the last token) survive; `truncation=True` on the whole prompt would cut its end instead:

```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = {str(folder)!r}  # this folder (or its hub id once uploaded)
tokenizer = AutoTokenizer.from_pretrained(folder)  # left padding
model = AutoModelForCausalLM.from_pretrained(folder).eval()
yes, no = {yes}, {no}
max_length, lead = {spec.max_length}, {lead!r}  # lead: the template's spaces before the document, tokenised with it
mark = "\u27e6document\u27e7"  # stands for the document while the chat template is rendered


def prompt_ids(query, document, instruction=None):
    system = [{{"role": "system", "content": instruction}}] if instruction is not None else []
    text = tokenizer.apply_chat_template(system + [{{"role": "query", "content": query}},
                                                   {{"role": "document", "content": mark}}], tokenize=False)
    prefix, suffix = text.split(mark)
    prefix, suffix = (tokenizer(part, add_special_tokens=False)["input_ids"] for part in (prefix.removesuffix(lead), suffix))
    document = tokenizer(lead + document, add_special_tokens=False)["input_ids"]  # may warn: cut next
    return prefix + document[:max_length - len(prefix) - len(suffix)] + suffix


pairs = {pairs!r}
batch = tokenizer.pad({{"input_ids": [prompt_ids(q, d) for q, d in pairs]}}, return_tensors="pt")
with torch.inference_mode():
    logits = model(**batch).logits
scores = {score}
print(scores.tolist())
```

## Prompt

Format `{spec.prompt.get("name")}`, instruction: {instruction!r} (`urlkit_reranker.json`
records the format, the instruction and the tokens). Up to {spec.max_length} prompt tokens: urlkit cuts
only the document to fit; so does the transformers code above, and CrossEncoder truncates the
rendered prompt at `max_length` and writes the template's closing tokens back over its end, which
keeps the same tokens (its scores match urlkit's on documents longer than the limit too).

## Training

| | |
| --- | --- |
| data | {run.get("data", "?")} |
| steps | {steps} |
| source run | `{run.get("path", "?")}` |
{f"| final metrics | the run's `{run['final_split']}` split |" + chr(10) if run.get("final_split") else ""}
{"| metric | value |" + chr(10) + "| --- | --- |" + chr(10) + rows if rows else ""}
"""
