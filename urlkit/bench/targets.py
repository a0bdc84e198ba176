"""The benchmark's verdicts: the matmul ceiling rows at the top of the table, and the targets
of issue 16 (MFU against the fastest ceiling at the model's own shapes, speed against the
peer, the URL loss's share of a step, constant memory), each met or not."""

from __future__ import annotations

import math

import torch

from urlkit.bench.measure import Ceiling, median
from urlkit.bench.table import Row

TARGETS = {"evaluation MFU": 0.40, "training MFU": 0.30, "evaluation x peer": 2.0, "training x peer": 2.0}  # issue 16


def nearest_rows(ceiling: Ceiling, tokens: float) -> int:
    """The probed row count of the model-shape ceiling closest to ``tokens`` per pass."""
    if math.isnan(tokens) or not ceiling.rows:
        return ceiling.rows[0] if ceiling.rows else 0
    return min(ceiling.rows, key=lambda rows: abs(math.log(rows / max(tokens, 1.0))))


def fastest_near(ceiling: Ceiling, tokens: float) -> tuple[int, torch.dtype, float]:
    """(rows, dtype, GFLOP/s): the fastest dtype's model-shape ceiling at the probed row count
    closest to ``tokens`` per pass, what every MFU of the table is read against."""
    rows = nearest_rows(ceiling, tokens)
    return (rows, *ceiling.best_at(rows))


def dtype_label(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def ceiling_rows(table, ceiling) -> None:
    rows = []
    for dtype in ceiling.dtypes:
        probes = ceiling.probes.get(dtype, [])
        rows.append(("ceiling", f"matmul {dtype_label(dtype)} {ceiling.sizes.get(dtype)}^3", ceiling.gflops(dtype), "GFLOP/s",
                     f"median of {len(probes)} probes between sections ({min(probes):.1f}-{max(probes):.1f})" if probes else ""))
        for count in ceiling.rows:
            probes = ceiling.shape_probes.get((dtype, count), [])
            rows.append(("ceiling", f"{dtype_label(dtype)} at the model's shapes, {count} rows", ceiling.shape_gflops(dtype, count),
                         "GFLOP/s", f"one layer's 7 projections x @ W^T; median of {len(probes)} probes "
                         f"({min(probes):.1f}-{max(probes):.1f})" if probes else ""))
    table.rows[:0] = [Row(*row) for row in rows]


def targets(table, results, eval_results, memory_results, ceiling, main_dtype) -> None:
    name = f"urlkit {dtype_label(main_dtype)}"
    four = results[4]
    url_share = 100 * four["loss"]["url"] / four["step"]
    sft_share = 100 * four["loss"]["sft"] / four["step"]
    _target(table, "URL loss share - SFT loss share <= 2 points", url_share - sft_share, "points",
            abs(url_share - sft_share) <= 2, f"{url_share:.2f}% vs {sft_share:.2f}% of a 1+4 step")
    if (1, None) in memory_results and any(k[0] == 16 and k[1] for k in memory_results):
        one = memory_results[(1, None)]
        chunked = {k: v for k, v in memory_results.items() if k[0] == 16 and k[1]}
        key = max(chunked)
        ratio = chunked[key]["peak_mb"] / one["peak_mb"]
        _target(table, f"peak memory 1+16 (chunk_size={key[1]}) / 1+1 <= 1.3", ratio, "x", ratio <= 1.3,
                f"the step's own growth: {chunked[key]['step_mb']:.0f} vs {one['step_mb']:.0f} MiB")
    rates, main, peer_rates = eval_results["rates"], eval_results["main"], eval_results["peer_rates"]
    for theirs in eval_results["peer_work"].values():
        ours = f"rerank_split {dtype_label(main_dtype)} batch {theirs['batch']}"
        if theirs["dtype"] != main_dtype or ours not in rates:
            continue
        peer_rate = peer_rates[theirs["batch"]]
        ratio = rates[ours] / peer_rate
        tokens = theirs["prompt"] / eval_results["n_pairs"]
        prompt = eval_results["work"][ours][0]["prompt"] / eval_results["n_pairs"]
        _target(table, f"evaluation docs/s / peer's >= {TARGETS['evaluation x peer']:g}, batch {theirs['batch']}", ratio, "x",
                ratio >= TARGETS["evaluation x peer"],
                f"{rates[ours]:.2f} vs {peer_rate:.2f} docs/s; prompt tokens per pair {prompt:.0f} vs {tokens:.0f}")
    if main in rates and eval_results.get("peer_fastest"):  # over the peer's dtypes and batch sizes
        peer_name, peer_rate = eval_results["peer_fastest"]
        ratio = rates[main] / peer_rate
        _target(table, f"evaluation docs/s (configured batch) / peer's fastest >= {TARGETS['evaluation x peer']:g}", ratio,
                "x", ratio >= TARGETS["evaluation x peer"], f"{rates[main]:.2f} vs {peer_rate:.2f} docs/s ({peer_name})")
    w, dtype = eval_results["work"][main]
    gflops = w["flops"] / median(eval_results["times"][main]) / 1e9
    rows, best, best_gflops = fastest_near(ceiling, w["pass_rows"])
    share = gflops / best_gflops
    tallest_rows = max(ceiling.rows, default=0)
    tallest, tallest_gflops = ceiling.best_at(tallest_rows)  # NaN where nothing was probed
    _target(table, f"evaluation MFU >= {TARGETS['evaluation MFU']:.0%} (fastest ceiling, model shapes)", 100 * share, "%",
            share >= TARGETS["evaluation MFU"],
            f"{gflops:.1f} of {best_gflops:.1f} GFLOP/s ({dtype_label(best)}, {rows} rows: the decoder passes' ~{w['pass_rows']:.0f} "
            f"tokens); {gflops / tallest_gflops:.0%} of the {tallest_rows}-row ceiling "
            f"({tallest_gflops:.1f}, {dtype_label(tallest)}), which sessions 5-7 read")
    for negatives, result in results.items():
        fig = result["figures"][name]
        if not math.isnan(result["peer_seconds"]):
            ratio = result["peer_seconds"] / fig.seconds
            _target(table, f"training 1+{negatives} steps/s / peer's fastest >= {TARGETS['training x peer']:g}", ratio, "x",
                    ratio >= TARGETS["training x peer"],
                    f"{1 / fig.seconds:.3g} vs {1 / result['peer_seconds']:.3g} steps/s ({result['peer_name']})")
        _, best, best_gflops = fastest_near(ceiling, fig.pass_rows)
        mfu = fig.flops_per_s / 1e9 / best_gflops
        _target(table, f"training 1+{negatives} MFU >= {TARGETS['training MFU']:.0%} (fastest ceiling, model shapes)",
                100 * mfu, "%", mfu >= TARGETS["training MFU"],
                f"{fig.flops_per_s / 1e9:.1f} of {best_gflops:.1f} GFLOP/s ({dtype_label(best)})")


def _target(table, what: str, value: float, unit: str, met: bool, detail: str) -> None:
    table.add("targets", what, value, unit, f"{'met' if met else 'NOT MET'}: {detail}")
