"""python -m urlkit.bench --quick --model tiny: the benchmark runs end to end and prints its table.

No timing assertions: speed targets live in the benchmark's printed figures
(docs/performance.md), not in tests. What is checked: every section is there, every rate is
a positive finite number, and the peak-memory probe reads a real peak.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from urlkit.bench import peer, process
from urlkit.bench.cli import main
from urlkit.bench.table import Table


# Both code paths on every machine: --dtypes forces the main dtype, so the test never depends
# on which one --dtypes auto would pick on this CPU (bf16 where it has bf16 units).
@pytest.mark.parametrize(("dtypes", "label"), [("float32", "fp32"), ("bfloat16", "bf16")])
def test_quick_bench_on_the_tiny_model_prints_every_section(tmp_path, capsys, dtypes, label):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--model", "tiny", "--no-memory", "--dtypes", dtypes, "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for section in ("ceiling", "training 1+4", "training 1+16", "evaluation", "targets"):
        assert f"\n{section} " in printed, section
    rows = json.loads(out.read_text())["rows"]
    rates = [r for r in rows if r["unit"] in ("steps/s", "docs/s", "GFLOP/s")]
    assert len(rates) >= 12
    assert all(isinstance(r["value"], float) and math.isfinite(r["value"]) and r["value"] > 0 for r in rates), rates
    settings = {r["setting"] for r in rows}
    assert {f"urlkit {label}", "no prefix sharing", "constant memory (chunk_size=4)", f"rerank_split {label} batch 64",
            "full-vocabulary logits, length-sorted"} <= settings
    # the layers the default does not run: model.compile=auto compiles bf16 weights' scoring of a
    # job of 1M prompt tokens or more where a C++ compiler is found (never float32 weights'); the
    # quick bench's few queries and its profiled batch are far fewer, so eager
    assert "compiled layers (model.compile=true), batch 64" in settings
    assert any(r["setting"].startswith("peer") for r in rows) == (peer.available() is not None)
    assert f"{label} at the model's shapes, 256 rows" in settings  # the reachable ceiling
    if label == "bf16":  # the autocast pass against peft's own cast-per-projection pass
        assert "adapter inputs cast to float32 (peft's own, not autocast)" in settings
    profile = [r for r in rows if r["section"].startswith("profile: ")]
    sections = sorted({r["section"] for r in profile})
    assert len(sections) == 2 and sections[1] == f"profile: training 1+4 step, {label}", sections
    assert re.fullmatch(rf"profile: evaluation batch of \d+ prompts, {label}", sections[0]), sections
    for section in {r["section"] for r in profile}:
        shares = [r["value"] for r in profile if r["section"] == section and r["setting"].startswith("forward part: ")]
        assert shares and all(0 <= v <= 100 for v in shares) and 90 <= sum(shares) <= 100.5, (section, shares)
        assert any(r["setting"] == "aten::mm" for r in profile if r["section"] == section)
    targets = [r for r in rows if r["section"] == "targets"]
    assert targets and all(r["detail"].startswith(("met", "NOT MET")) for r in targets)
    # a section's MFU is read against the same (all) ceiling probes as the target's
    (step,) = [r for r in rows if r["section"] == "training 1+4" and r["setting"] == f"urlkit {label}"]
    (target,) = [r for r in targets if r["setting"].startswith("training 1+4 MFU")]
    assert re.search(r"MFU (\d+)% of the", step["detail"]).group(1) == f"{target['value']:.0f}"


def test_an_interrupted_bench_still_prints_and_writes_what_it_measured(tmp_path, capsys, monkeypatch):
    from urlkit.bench import cli

    def first_section_then_ctrl_c(table, *args):
        table.add("training 1+4", "urlkit fp32", 1.5, "steps/s", "measured before the interrupt")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_sections", first_section_then_ctrl_c)
    out = tmp_path / "bench.json"
    assert main(["--quick", "--model", "tiny", "--dtypes", "float32", "--json", str(out)]) == 130
    printed = capsys.readouterr().out
    assert "INTERRUPTED" in printed and "measured before the interrupt" in printed
    assert [r["setting"] for r in json.loads(out.read_text())["rows"]] == ["urlkit fp32"]


def test_peak_memory_and_time_of_a_step_in_this_process():
    result = process.measure("tiny", 1, None, "cpu", None, time_steps=1)
    assert result["process_peak_mb"] >= result["peak_mb"] >= result["live_mb"] > 0
    assert result["step_mb"] == result["peak_mb"] - result["live_mb"]
    assert result["step_s"] > 0 and result["threads"] >= 1


def test_interleaved_rounds_rotate_which_variant_runs_first():
    from urlkit.bench.measure import interleaved

    order = []
    variants = {name: (lambda r, n=name: order.append((r, n))) for name in "abc"}
    times = interleaved(variants, rounds=4, warmup=1)
    assert [n for _, n in order] == list("abc" "abc" "bca" "cab" "abc")  # warm-up, then rotated
    assert all(r == max(i // 3 - 1, 0) for i, (r, _) in enumerate(order))  # every variant of a round gets its input
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}


def test_the_table_aligns_sections_and_numbers():
    table = Table(header=["title"])
    table.add("a", "first", 1234.5, "x", "note")
    table.add("a", "second", 0.01234, "y")
    table.add("b", "third", float("nan"), "z")
    lines = table.render().splitlines()
    assert lines[0] == "title" and lines[-3].startswith("a ") and lines[-2].startswith("  ")
    assert "1,234" in lines[-3] and "0.0123" in lines[-2] and "n/a" in lines[-1]


def test_the_mfu_ceiling_is_read_at_the_rows_of_the_decoder_passes():
    from urlkit.bench.flops import batch_work, pass_rows
    from urlkit.model.prefix_sharing import prefix_tree

    # eight prompts sharing a 40-token prefix, continued by 3-24 tokens each (right-padded)
    prompts = [list(range(1, 41)) + [100 + i] * (3 + 3 * i) for i in range(8)]
    width = max(map(len, prompts))
    input_ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    tree = prefix_tree(input_ids, mask)
    *_, slots = batch_work({"input_ids": input_ids, "attention_mask": mask}, share_prefix=True)
    assert slots == [part.input_ids.numel() for part in tree.levels + tree.buckets] and sum(slots) == tree.tokens
    *_, plain = batch_work({"input_ids": input_ids, "attention_mask": mask}, share_prefix=False)
    assert plain == [8 * width]
    assert pass_rows([100, 100]) == 100 and pass_rows([900, 100]) == 820  # weighted by where the tokens are


@pytest.mark.parametrize(("device", "label"), [("cpu", "python -m urlkit.run, end to end, cold compile cache"),
                                               ("cuda", "python -m urlkit.run trainer=gpu, end to end, cold compile cache")])
def test_the_default_experiment_row_reads_the_run_or_its_failure(tmp_path, monkeypatch, capsys, device, label):
    """The row of ``--default-experiment``: the run's own files read back (NDCG@10, the paired
    test against BM25), or its failure with the command that failed and its last line."""
    import os
    import subprocess
    from pathlib import Path

    calls = []

    def fake_run(command, env, **_):  # what urlkit.run writes, for 30 queries where the reranker wins 20
        calls.append(command)
        root = next(arg for arg in command if arg.startswith("output_root=")).split("=", 1)[1]
        # compiled as on a fresh machine: caches inside the run's own, new folder
        assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(root) and not Path(env["TORCHINDUCTOR_CACHE_DIR"]).exists()
        assert env["TRITON_CACHE_DIR"].startswith(root) and env["PATH"] == os.environ["PATH"]
        if len(calls) == 2:
            return subprocess.CompletedProcess(command, 1, "", "Traceback ...\nRuntimeError: out of memory")
        root = Path(next(arg for arg in command if arg.startswith("output_root=")).split("=", 1)[1])
        run = root / "runs" / "r1"
        (run / "per_query").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"test/ndcg@10": 0.7, "bm25/test/ndcg@10": 0.6}))
        for model, wins in (("bm25", 0.0), ("reranker", 1.0)):
            rows = [f"q{i},{wins if i < 20 else 0.5}" for i in range(30)]
            (run / "per_query" / f"data_test_{model}.csv").write_text("query_id,ndcg@10\n" + "\n".join(rows) + "\n")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    table = Table()
    process.default_experiment(table, device)
    process.default_experiment(table, device)
    assert all(("trainer=gpu" in c) == (device == "cuda") for c in calls)
    ok, failed = table.rows
    assert {(row.section, row.setting) for row in (ok, failed)} == {("default experiment", label)}
    assert "test/ndcg@10 0.700" in ok.text and "on 30 queries: +66.67 NDCG@10 points" in ok.text
    assert float(ok.text.split("p = ")[1].split(";")[0]) < 0.001
    assert failed.text.startswith("FAILED (exit 1): RuntimeError: out of memory")
    assert "Traceback" in capsys.readouterr().err


def test_a_bench_step_trains_in_training_mode_and_sets_it_only_when_it_was_left():
    """Lightning sets training mode once a fit, not every step; the bench's step does the same,
    but sets it again after another section left the shared modules in eval mode."""
    from helpers.tiny_reranker import tiny_reranker

    from urlkit.bench.training import Stepper
    from urlkit.bench.workload import compose_config
    from urlkit.data.format import Document, Query

    reranker, renderer = tiny_reranker(device="cpu")
    query = Query(id="q", text="which animals sleep through the winter", qrels={"d0": 1})
    prompts = renderer.collate([renderer.encode("Find the passage.", query, Document(id=f"d{i}", text=f"bears {i}"))
                                for i in range(5)])
    batch = {"prompts": prompts, "mask": torch.ones(1, 5, dtype=torch.bool)}
    stepper = Stepper(reranker, compose_config("default"))
    modes, calls = [], []
    reranker.decoder.embed_tokens.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    train = stepper.reranker.train
    stepper.reranker.train = lambda mode=True: calls.append(mode) or train(mode)
    before = [p.detach().clone() for p in stepper.trainable]
    reranker.eval()  # as an evaluation section leaves them
    stepper(batch)
    stepper(batch)
    assert calls == [True], "set once, not every step"
    reranker.eval()
    stepper(batch)
    assert calls == [True, True] and modes and all(modes), "every step's pass ran in training mode"
    assert any(not torch.equal(p, q) for p, q in zip(stepper.trainable, before, strict=True)), "the steps trained"
