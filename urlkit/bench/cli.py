"""``python -m urlkit.bench``: one table of speed figures, all measured side by side in one run.

    python -m urlkit.bench                      # the default experiment's model and data
    python -m urlkit.bench --device cuda        # the same on a GPU
    python -m urlkit.bench --quick --model tiny # the smoke test (seconds)

Sections: the machine's matmul ceiling; training steps/s, tokens/s and MFU at 1+4 and 1+16
documents per query (urlkit, its variants, the peer); the loss's share of a step; evaluation
documents/s, padding and MFU (urlkit, its variants, the peer); peak memory per (N, chunk
size); on CPUs, the OpenMP wait policy; then the targets of docs/performance.md, met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os

import torch

from urlkit.bench import evaluation, peer, process, training
from urlkit.bench.flops import ModelShape, reads_only_scored
from urlkit.bench.measure import (
    Ceiling,
    interleaved,
    load_average,
    machine_description,
    median,
    spread,
    synchronizer,
)
from urlkit.bench.profile import profile_section
from urlkit.bench.table import Table
from urlkit.bench.targets import ceiling_rows, dtype_label, fastest_near, targets
from urlkit.bench.workload import MODELS, build, compose_config, load_data, training_batches

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
SHAPE_ROWS = (256, 512, 1024, 2048)  # tokens per decoder pass: a 1+4 step (~200), a 1+16 step (~550), an evaluation
# bucket of packs (~500-650 on the embedded data), a taller pass


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m urlkit.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default here: %(default)s)")
    parser.add_argument("--model", default="default", help=f"{' | '.join(MODELS)} | any conf/model name")
    parser.add_argument("--quick", action="store_true", help="few rounds, few queries: a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per section (default 5, quick 1)")
    parser.add_argument("--eval-queries", type=int, default=None, help="test queries scored (default 20, quick 3)")
    parser.add_argument("--dtypes", default="auto",
                        help="frozen-weight dtypes to run, first = main (default auto: the dtype with the "
                             "fastest matmul ceiling, and float32 next to it)")
    parser.add_argument("--chunk-size", type=int, default=4, help="train.chunk_size of the constant-memory rows")
    parser.add_argument("--no-peer", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", default=None, help="also write the table as JSON to this file")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler summary")
    parser.add_argument("--no-threads", action="store_true", help="skip the OpenMP thread settings (fresh processes)")
    parser.add_argument("--default-experiment", action="store_true",
                        help="also time `python -m urlkit.run` (the default experiment, end to end) in a fresh process")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.eval_queries = args.eval_queries or (3 if args.quick else 20)
    if args.dtypes != "auto":
        args.dtypes = [getattr(torch, name.strip()) for name in args.dtypes.split(",") if name.strip()]
    return args


def auto_dtypes(ceiling: Ceiling) -> list[torch.dtype]:
    """The fastest dtype first, float32 next to it: bf16 frozen weights pay only where the
    machine multiplies bf16 faster than float32 (matrix units); elsewhere they are skipped."""
    best, _ = ceiling.best()
    return [best] if best == torch.float32 else [best, torch.float32]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    sync = synchronizer(device)
    cfg = compose_config(args.model)
    table = Table()
    ceiling = Ceiling(device, max_size=512 if args.quick else 2048, dtypes=(torch.float32, torch.bfloat16))
    ceiling.probe()
    skipped = []
    if args.dtypes == "auto":
        args.dtypes = auto_dtypes(ceiling)
        skipped = [d for d in ceiling.dtypes if d not in args.dtypes]

    status = 0
    try:
        _sections(table, args, cfg, device, sync, ceiling, skipped)
    except KeyboardInterrupt:  # Ctrl-C, or `timeout -s INT`: what was measured is still printed
        table.header.append("INTERRUPTED: only the sections measured before the interrupt, and no targets")
        status = 130
    table.header.append(f"load average at the end: {load_average()}")
    print(table.render(), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table.as_dict(), f, indent=1)
    return status


def _sections(table, args, cfg, device, sync, ceiling: Ceiling, skipped: list[torch.dtype]) -> None:
    """Every section of the table in order, then the targets (rows are added as they are measured)."""
    data = load_data(cfg)
    models = {dtype: build(cfg, device, DTYPE_NAMES[dtype]) for dtype in args.dtypes}
    main_dtype = args.dtypes[0]
    urlkit = models[main_dtype]
    shape = ModelShape.of(urlkit.reranker.decoder)
    ceiling.projections, ceiling.rows = shape.projections(), (SHAPE_ROWS[:1] if args.quick else SHAPE_ROWS)
    ceiling.probe()
    peer_version = None if args.no_peer else peer.available()
    peers = {}
    with contextlib.ExitStack() as stack:
        if peer_version:
            folder = peer.model_folder(cfg, stack)
            with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115 (weight-loading bars)
                peers = {dtype: peer.Peer(folder, dtype, device, int(cfg.model.max_length), cfg.model.lora,
                                          lr=float(cfg.train.lr)) for dtype in args.dtypes}
        table.header = _header(args, cfg, device, shape, peer_version)
        for dtype in skipped:
            table.header.append(f"{DTYPE_NAMES[dtype]} frozen weights not run: its matmul ceiling "
                                f"({ceiling.gflops(dtype):.1f} GFLOP/s) is below {DTYPE_NAMES[args.dtypes[0]]}'s "
                                f"({ceiling.gflops(args.dtypes[0]):.1f}); --dtypes float32,{DTYPE_NAMES[dtype]} runs it")
        results = {}
        for negatives in (4, 16):
            results[negatives] = _training(table, args, cfg, data, models, peers, shape, ceiling, negatives, sync)
            ceiling.probe()
        eval_results = _evaluation(table, args, cfg, data, models, peers, shape, ceiling, sync)
        ceiling.probe()
    if not args.no_profile:
        profile_section(table, args, cfg, data, urlkit, dtype_label(main_dtype))
    memory_results = {} if args.no_memory else _memory(table, args, device, main_dtype)
    if args.default_experiment:
        if device.type == "cuda":  # the blocks cached by the sections above (~115 GiB on an H200) to the new process
            torch.cuda.empty_cache()
        process.default_experiment(table, args.device)
    if device.type == "cpu" and not args.quick and not args.no_threads:
        process.threading_rows(table, args, DTYPE_NAMES[main_dtype])
    ceiling_rows(table, ceiling)
    targets(table, results, eval_results, memory_results, ceiling, main_dtype)


def _header(args, cfg, device, shape: ModelShape, peer_version) -> list[str]:
    return [
        f"urlkit.bench: {machine_description(device)}",
        f"model: {cfg.model.name} ({shape.params / 1e6:.1f}M non-embedding parameters, {shape.layers} layers, "
        f"hidden {shape.hidden}; LoRA r={cfg.model.lora.r}: {shape.lora_params / 1e6:.2f}M trainable), "
        f"max_length {cfg.model.max_length}, weight={cfg.weight.name} direction={cfg.direction.name}",
        f"data: {cfg.data.name} (training groups: the first queries of {cfg.data.train_split}; evaluation: "
        f"the first {args.eval_queries} queries of {cfg.data.test_split}, top-{cfg.eval.depth} of {cfg.data.retriever})",
        f"timing: {args.rounds} interleaved rounds after 1 warm-up round, medians; peer: "
        f"{'sentence-transformers ' + peer_version if peer_version else 'not run (pip install sentence-transformers>=5)'}",
    ]


def _training(table, args, cfg, data, models, peers, shape, ceiling, negatives, sync) -> dict:
    cfg_n = compose_config(args.model, f"data.n_negatives={negatives}")
    chunk = args.chunk_size if negatives >= 2 * args.chunk_size else None
    main_dtype = next(iter(models))
    built = models[main_dtype]
    batches = training_batches(cfg_n, data, built.renderer, negatives, args.rounds, chunk, device=torch.device(args.device))
    steppers = {f"urlkit {dtype_label(main_dtype)}": (training.Stepper(built.reranker, cfg_n), True, main_dtype)}
    steppers["no prefix sharing"] = (training.Stepper(built.reranker, cfg_n, share_prefix=False), False, main_dtype)
    steppers["shared prefix, not folded"] = (training.Stepper(built.reranker, cfg_n, fold=False), True, main_dtype)
    steppers["shared prefix, continuations unpacked"] = (training.Stepper(built.reranker, cfg_n, pack_length=1), True, main_dtype)
    steppers["transformers' decoder forward (fused_layers=false)"] = (
        training.Stepper(built.reranker, cfg_n, fused_layers=False), True, main_dtype)
    steppers["every token through the last layer (read_only_last_layer=false)"] = (
        training.Stepper(built.reranker, cfg_n, read_only_last_layer=False), True, main_dtype)
    if main_dtype in (torch.bfloat16, torch.float16):
        steppers["adapter inputs cast to float32 (peft's own, not autocast)"] = (
            training.Stepper(built.reranker, cfg_n, mixed=False), True, main_dtype)
    if args.device == "cpu":
        steppers["attention: fused flash kernel (cpu_training_attention=default)"] = (
            training.Stepper(built.reranker, cfg_n, cpu_training_attention="default"), True, main_dtype)
        steppers["attention: dense, not banded (banded_attention=false)"] = (
            training.Stepper(built.reranker, cfg_n, banded_attention=False), True, main_dtype)
        # the rounded counts of urlkit's row are built by the first variant to step on a round's
        # batch; these counts are this row's alone, so it pays oneDNN's kernel builds on every
        # new batch, as a run without rounding does on most steps
        steppers["rows as they come (token_multiple=1): a kernel build per new count"] = (
            training.Stepper(built.reranker, cfg_n, token_multiple=1), True, main_dtype)
    if chunk:
        steppers[f"constant memory (chunk_size={chunk})"] = (training.Stepper(built.reranker, cfg_n, chunked=True), True, main_dtype)
    if negatives == 4:
        steppers["native SFT loss (no URL weights, no telemetry)"] = (training.Stepper(built.reranker, cfg_n, loss="sft"), True, main_dtype)
        if float(cfg.model.lora.dropout) > 0:
            steppers["LoRA dropout 0 (model.lora.dropout=0)"] = (training.Stepper(built.reranker, cfg_n, lora_dropout=0.0), True, main_dtype)
        for dtype, other in models.items():
            if dtype != main_dtype:
                steppers[f"urlkit {dtype_label(dtype)} frozen weights"] = (training.Stepper(other.reranker, cfg_n), True, dtype)
    variants = {name: (lambda r, s=stepper: s(batches[r])) for name, (stepper, _, _) in steppers.items()}
    peer_inputs = [training.peer_pairs(batch, data) for batch in batches]
    peer_variants = {}  # variant name -> the peer model it runs
    for dtype, model in peers.items():  # every dtype: urlkit is compared with the peer's fastest
        peer_variants[f"peer {dtype_label(dtype)} (BCE)"] = model
        variants[f"peer {dtype_label(dtype)} (BCE)"] = lambda r, m=model: m.train_step(*peer_inputs[r])
    times = interleaved(variants, rounds=args.rounds, warmup=1, sync=sync)

    section = f"training 1+{negatives}"
    figures = {}
    for name, (stepper, shared, dtype) in steppers.items():
        figures[name] = training.step_figures(name, times[name], batches, shape, shared, dtype,
                                              read_only=reads_only_scored(stepper.reranker))
    peer_name, peer_seconds = min(((name, median(times[name])) for name in peer_variants), key=lambda item: item[1],
                                  default=(None, float("nan")))
    for name, fig in figures.items():
        head = f"{fig.prompt_tokens_per_s:,.0f} prompt tok/s, {fig.flops_per_s / 1e9:.1f} model GFLOP/s, "
        tail = f"; {spread(times[name])}"
        if not math.isnan(peer_seconds):
            tail += f"; x{peer_seconds / fig.seconds:.2f} the steps/s of the peer's fastest ({peer_name})"
        mfu = _mfu(ceiling, fig.flops_per_s / 1e9, fig.pass_rows, fig.dtype)
        table.add(section, name, 1 / fig.seconds, "steps/s", lambda h=head, m=mfu, t=tail: h + m() + t)
    for name, model in peer_variants.items():
        pairs_tokens = [sum(int(m.sum()) for m in model.attention_masks(p, len(p))) for p, _ in peer_inputs]
        tokens_per_s = median([t / s for t, s in zip(pairs_tokens, times[name], strict=False)])
        table.add(section, name, 1 / median(times[name]), "steps/s", f"{tokens_per_s:,.0f} prompt tok/s (its own prompt); {spread(times[name])}")
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.device(args.device).type == "cuda" else None
    if peak is not None:
        table.add(section, "peak GPU memory (all variants)", peak, "MiB")

    # the loss's share of urlkit's step, against the native SFT loss on the same logits
    reranker = built.reranker
    with torch.no_grad():
        from urlkit.data.groups import scatter_scores

        logits = scatter_scores(reranker(batches[0]["prompts"]), batches[0]["mask"])
    seconds = training.loss_seconds(cfg_n, logits, batches[0]["mask"])
    step = figures[f"urlkit {dtype_label(main_dtype)}"].seconds
    for key, label in (("url", f"URL loss ({cfg.weight.name}, {cfg.direction.name}) forward+backward"),
                       ("sft", "native SFT loss forward+backward"), ("telemetry", "step telemetry (counterfactual W, native losses)")):
        table.add(section, label, 100 * seconds[key] / step, "% of step", f"{seconds[key] * 1e6:,.0f} us of a {step:.3g} s step")
    return {"figures": figures, "peer_seconds": peer_seconds, "peer_name": peer_name, "loss": seconds, "step": step}


def _mfu(ceiling: Ceiling, gflops: float, pass_rows: float, dtype: torch.dtype):
    """A row's MFU phrase, read when the table is printed: against every ceiling probe of the run,
    as the targets read it (not only the probes taken before the row's section)."""

    def text() -> str:
        rows, best, best_gflops = fastest_near(ceiling, pass_rows)
        return (f"MFU {gflops / best_gflops:.0%} of the {dtype_label(best)} ceiling at the model's shapes ({rows} rows), "
                f"{gflops / ceiling.gflops(dtype):.0%} of {dtype_label(dtype)} {ceiling.sizes.get(dtype)}^3")

    return text


def _evaluation(table, args, cfg, data, models, peers, shape, ceiling, sync) -> dict:
    from urlkit.build import make_renderer
    from urlkit.data.prompts import _document_text
    from urlkit.evaluation.rerank import rerank_split

    depth, base = int(cfg.eval.depth), int(cfg.eval.batch_size)
    sizes = [base] if args.quick else sorted({64, base})  # the configured batch and the old default
    split = evaluation.subset(data.test, args.eval_queries)
    ranking = data.test_ranking
    main_dtype = next(iter(models))
    built = models[main_dtype]
    renderer = built.renderer
    n_pairs = sum(len(ranking.get(q.id, [])[:depth]) for q in split.queries)
    pairs_text = [(q.text, _document_text(split.corpus[d])) for q in split.queries for d, _ in ranking.get(q.id, [])[:depth]]

    def rerank(batch_size: int = base, scoring: dict | None = None, **options):
        reranker = built.reranker.with_options(**scoring) if scoring else built.reranker
        return lambda r: rerank_split(reranker, renderer, split, ranking, depth=depth, batch_size=batch_size,
                                      progress=False, **options)

    batches = {size: evaluation.rerank_batches(renderer, split, ranking, depth, size) for size in sizes}
    plain = evaluation.length_sorted_batches(renderer, split, ranking, depth, base)
    unsorted = evaluation.unsorted_batches(renderer, split, ranking, depth, base)
    shares = built.reranker.eval().shares_prefixes()  # the default's choice on this device (no: on a GPU)
    read_only = reads_only_scored(built.reranker)  # its last layer: the scored tokens' output only
    job_tokens = int(sum(batch["attention_mask"].sum() for batch in batches[base]))
    with torch.no_grad():  # what model.compile=auto chooses for a job of this size here; the variant is the other
        compiled = built.reranker.with_options(job_tokens=job_tokens).eval().layers_compiled()
    other_layers = (f"eager layers (model.compile=false), batch {base}", False) if compiled else (
        f"compiled layers (model.compile=true), batch {base}", True)
    work = {f"rerank_split {dtype_label(main_dtype)} batch {size}": (
        evaluation.work(batches[size], shares, shape, read_only), main_dtype) for size in sizes}
    variants = {f"rerank_split {dtype_label(main_dtype)} batch {size}": rerank(size) for size in sizes}
    batch_of = {f"rerank_split {dtype_label(main_dtype)} batch {size}": size for size in sizes}  # others: base
    # name -> (ScoringOptions changed, rerank_split's options changed)
    like_main = {  # variants of the default, sharing prefixes where it does
        f"LoRA not merged (eval.merge_lora=false), batch {base}": ({}, {"merge_lora": False}),
        f"transformers' decoder forward (fused_layers=false), batch {base}": ({"fused_layers": False}, {}),
        other_layers[0]: ({"compiled_layers": other_layers[1]}, {}),
        f"every token through the last layer (read_only_last_layer=false), batch {base}": (
            {"read_only_last_layer": False}, {}),
    }
    if main_dtype in (torch.bfloat16, torch.float16):
        like_main[f"adapter inputs cast to float32 (peft's own, not autocast), batch {base}"] = ({"mixed": False}, {})
    sharing = {  # variants of the shared-prefix pass itself
        f"shared level not folded, batch {base}": ({"share_prefix": True, "fold": False}, {}),
        f"continuations unpacked, batch {base}": ({"share_prefix": True, "pack_length": 1}, {}),
    }
    if not shares:
        sharing[f"prefixes shared (share_prefix=true), batch {base}"] = ({"share_prefix": True}, {})
    for group, shared in ((like_main, shares), (sharing, True)):
        for name, (scoring, options) in group.items():
            variants[name] = rerank(scoring=scoring, **options)
            reads = reads_only_scored(built.reranker.with_options(**scoring))
            work[name] = (evaluation.work(batches[base], shared, shape, reads), main_dtype)
    variants["no prefix sharing, length-sorted"] = lambda r: evaluation.batches_scorer(built.reranker, False)(plain)
    work["no prefix sharing, length-sorted"] = (evaluation.work(plain, False, shape, read_only), main_dtype)
    variants["full-vocabulary logits, length-sorted"] = lambda r: evaluation.full_vocab_scorer(built.backbone.model, built.token_ids)(plain)
    work["full-vocabulary logits, length-sorted"] = (evaluation.work(plain, False, shape), main_dtype)
    variants["no_grad instead of inference_mode"] = lambda r: evaluation.batches_scorer(built.reranker, shares, "no_grad")(batches[base])
    work["no_grad instead of inference_mode"] = (evaluation.work(batches[base], shares, shape, read_only), main_dtype)
    for dtype, other in models.items():
        if dtype != main_dtype:
            name = f"rerank_split {dtype_label(dtype)} frozen weights, batch {base}"
            variants[name] = lambda r, o=other: rerank_split(o.reranker, o.renderer, split, ranking, depth=depth, batch_size=base, progress=False)
            work[name] = (evaluation.work(batches[base], shares, shape, reads_only_scored(other.reranker)), dtype)
    peer_work = {}
    for dtype, model in peers.items():
        for size in sizes:
            name = f"peer {dtype_label(dtype)} CrossEncoder.predict batch {size}"
            variants[name] = lambda r, m=model, b=size: m.score(pairs_text, b)
            batch_of[name] = size
            masks = model.attention_masks(pairs_text, size)
            tokens = sum(int(m.sum()) for m in masks)
            peer_work[name] = {"prompt": tokens, "padding": 1 - tokens / sum(m.numel() for m in masks), "batch": size,
                               "dtype": dtype}
    times = interleaved(variants, rounds=args.rounds, warmup=1, sync=sync)

    section = "evaluation"
    peer_rates = {w["batch"]: n_pairs / median(times[name]) for name, w in peer_work.items() if w["dtype"] == main_dtype}
    rates = {}
    for name, seconds in times.items():
        batch = batch_of.get(name, base)
        peer_rate = peer_rates.get(batch, float("nan"))
        rate = n_pairs / median(seconds)
        rates[name] = rate
        if name in work:
            w, dtype = work[name]
            gflops = w["flops"] / median(seconds) / 1e9
            head = (f"{w['prompt'] / n_pairs:.1f} prompt tok/doc, {w['computed'] / n_pairs:.1f} computed, "
                    f"padding {w['padding']:.0%}, {w['passes']} decoder passes of ~{w['pass_rows']:.0f} tokens, "
                    f"{gflops:.1f} model GFLOP/s = ")
            tail = f"; x{rate / peer_rate:.2f} the peer's docs/s at batch {batch}" if not math.isnan(peer_rate) else ""
            tail += f"; {spread(seconds)} for {n_pairs} docs"
            mfu = _mfu(ceiling, gflops, w["pass_rows"], dtype)
            table.add(section, name, rate, "docs/s", lambda h=head, m=mfu, t=tail: h + m() + t)
        else:
            w = peer_work[name]
            table.add(section, name, rate, "docs/s", f"{w['prompt'] / n_pairs:.1f} prompt tok/doc (its own prompt), "
                      f"padding {w['padding']:.0%}; {spread(seconds)} for {n_pairs} docs")
    unsorted_work = evaluation.work(unsorted, False, None)
    table.add(section, "padding share, plain batches in data order", 100 * unsorted_work["padding"], "%", f"batch {base}")
    cold, warm = evaluation.encode_seconds(lambda: make_renderer(built.backbone, cfg.model, cfg.get("prompt")), split, ranking, depth)
    table.add(section, "tokenising a prompt (first time / cached)", cold * 1e3, "ms", f"cached: {warm * 1e3:.3f} ms")
    main = f"rerank_split {dtype_label(main_dtype)} batch {base}"
    best = max((n for n in rates if n in work), key=rates.get)
    peer_fastest = max(((name, rates[name]) for name in peer_work), key=lambda item: item[1], default=None)
    return {"rates": rates, "peer_rates": peer_rates, "peer_fastest": peer_fastest, "main": main, "best": best, "work": work, "times": times,
            "n_pairs": n_pairs, "peer_work": peer_work, "main_dtype": main_dtype}


def _memory(table, args, device, dtype) -> dict:
    settings = [(1, None), (4, None), (16, None), (16, args.chunk_size), (16, 2)]
    if args.quick:
        settings = [(1, None), (16, 2)]
    out = {}
    for negatives, chunk in settings:
        result = process.in_subprocess(args.model, negatives, chunk, str(device), DTYPE_NAMES[dtype])
        out[(negatives, chunk)] = result
        label = f"1+{negatives}" + (f", chunk_size={chunk}" if chunk else ", one pass")
        table.add("peak memory", label, result["peak_mb"], "MiB",
                  f"step: +{result['step_mb']:.0f} MiB over {result['live_mb']:.0f} live ({result['method']}); "
                  f"whole process {result['process_peak_mb']:.0f}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
