"""``python -m urlkit.run model=tiny_vl data=mbeir data.path=<root> data.dataset=<name>`` end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from helpers.data_builders import mbeir_tree
from helpers.run_helpers import compose_train

from urlkit.build import build_reranker, load_data_split
from urlkit.data.groups import GroupCollator, TrainGroups
from urlkit.paths import REPO_ROOT

PROMPTS = ("Find the picture the edit describes.", "Retrieve the edited image.")


def _run(root, tmp_path, *overrides):
    args = [
        "model=tiny_vl", "data=mbeir", f"data.path={root}", "data.dataset=toy_task7",
        "data.retriever=trec", f"data.run_file={root / 'first_stage.trec'}", "logger=none",
        "train.max_steps=2", "train.warmup_steps=1", "eval.every_n_steps=0", "checkpoint.every_n_steps=2",
        "data.n_negatives=3", "+trainer.enable_progress_bar=false", f"output_root={tmp_path / 'out'}",
        *overrides,
    ]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "urlkit.run", *args], capture_output=True, text=True,
                          timeout=280, cwd=REPO_ROOT)  # fmt: skip


def test_mbeir_tree_trains_and_tests_end_to_end(tmp_path):
    root = mbeir_tree(tmp_path / "M-BEIR")
    out = _run(root, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "toy_task7/train [IT2I]: 8 queries" in out.stdout  # category from task_id 7
    assert "query/train/mbeir_toy_train.jsonl" in out.stdout  # M-BEIR's training file of the dataset
    assert "2 lines of other tasks than task 7 left out" in out.stdout
    assert "cand_pool/global/mbeir_union_train_cand_pool.jsonl" in out.stdout  # never the local test pool
    assert "toy_task7/test [IT2I]: 8 queries" in out.stdout and "query/test/mbeir_toy_task7_test.jsonl" in out.stdout
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    with open(run_dir / "per_query" / "toy_task7_test_reranker.csv") as f:
        tested = {row["query_id"] for row in csv.DictReader(f)}
    assert tested == {f"7:{300 + k}" for k in range(8)}  # the test queries, not the training ones
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0


@pytest.mark.parametrize(("missing", "named"), [
    ("query/test/mbeir_toy_task7_test.jsonl", "query/test/mbeir_toy_task7_test.jsonl"),
    ("instructions/query_instructions.tsv", "instructions/query_instructions.tsv"),
    ("cand_pool/local/mbeir_toy_task7_cand_pool.jsonl", "cand_pool/local/mbeir_toy_task7_cand_pool.jsonl"),
])  # fmt: skip
def test_missing_files_stop_the_run_naming_them(tmp_path, missing, named):
    root = mbeir_tree(tmp_path / "M-BEIR")
    (root / missing).unlink()
    out = _run(root, tmp_path)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "error:" in out.stderr and str(root / named) in out.stderr


def test_the_tsv_instruction_is_in_the_rendered_training_prompts(tmp_path):
    root = mbeir_tree(tmp_path / "M-BEIR")
    cfg = compose_train(root, "model=tiny_vl", "data=mbeir", f"data.path={root}", "data.dataset=toy_task7")
    train = load_data_split(cfg.data, cfg.data.train_split)
    built = build_reranker(cfg, trainable=False)
    groups = TrainGroups(train, None, n_negatives=2, seed=0)
    items = [groups[i] for i in range(len(groups))]
    batch = GroupCollator(built.renderer, train)(items)
    texts = built.backbone.tokenizer.batch_decode(batch["prompts"]["input_ids"])
    for item, query, start in zip(items, train.queries, range(0, len(texts), 3), strict=True):
        instruction = item["instruction"]  # this epoch's draw among the query's TSV prompts
        assert instruction in PROMPTS
        assert all(instruction in text and query.text in text for text in texts[start : start + 3])
    assert {item["instruction"] for item in items} == set(PROMPTS)


def test_a_list_of_mbeir_datasets_trains_as_a_balanced_mixture(tmp_path):
    from urlkit.train import train

    root = tmp_path / "M-BEIR"
    mbeir_tree(root, task_id=7)
    first_stage = (root / "first_stage.trec").read_text()
    mbeir_tree(root, task_id=4)  # a second task in the same tree
    (root / "first_stage.trec").write_text(first_stage + (root / "first_stage.trec").read_text())
    tsv = root / "instructions" / "query_instructions.tsv"
    tsv.write_text(tsv.read_text() + "image,text\timage\tToy\t7\tFind the picture the edit describes.\n")
    cfg = compose_train(
        root, "model=tiny_vl", "data=mbeir", f"data.path={root}", "data.dataset=[toy_task7,toy_task4]",
        "data.retriever=trec", f"data.run_file={root / 'first_stage.trec'}", "train.queries_per_step=2",
        "train.max_steps=3", "data.mixture_block=2", "eval.test_queries=2",
    )  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["mixture"] == {"toy_task7": {"weight": 1.0, "items": 3}, "toy_task4": {"weight": 1.0, "items": 3}}
    with open(tmp_path / "run" / "per_query" / "toy_task7_test_reranker.csv") as f:  # dev/test: the first dataset
        assert [row["query_id"] for row in csv.DictReader(f)] == ["7:300", "7:301"]
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0


@pytest.mark.parametrize("prompt", ["qwen3_vl_reranker", "urlkit"])
def test_the_tsv_instruction_flows_into_the_chosen_prompt_format(tmp_path, prompt):
    root = mbeir_tree(tmp_path / "M-BEIR")
    cfg = compose_train(root, "model=tiny_vl", "data=mbeir", f"data.path={root}", "data.dataset=toy_task7",
                        f"prompt={prompt}")  # fmt: skip
    test = load_data_split(cfg.data, cfg.data.test_split)
    built = build_reranker(cfg, trainable=False)
    query = test.queries[0]
    text = built.renderer.render_text(test.instruction_for(query), query, test.corpus[query.positives[0]])
    assert test.instruction_for(query) in PROMPTS
    marker = "<Instruct>: " if prompt == "qwen3_vl_reranker" else ""
    assert f"{marker}{test.instruction_for(query)}" in text
    default = cfg.prompt.get("default_instruction")
    if default:
        assert default not in text  # the TSV's prompt, not the format's default


def test_a_broken_dev_file_stops_the_run_and_a_missing_one_is_left_out(tmp_path):
    root = mbeir_tree(tmp_path / "M-BEIR")
    val = root / "query" / "val" / "mbeir_toy_task7_val.jsonl"
    val.write_text(val.read_text() + "{not json\n")
    out = _run(root, tmp_path, "eval.every_n_steps=1")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"error: {val}:9: malformed JSON" in out.stderr  # not "no dev evaluation", then on
    val.unlink()
    out = _run(root, tmp_path, "eval.every_n_steps=1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"no dev evaluation: {val}: no val split of M-BEIR dataset 'toy_task7'" in out.stdout


def test_a_pool_per_split_from_the_command_line(tmp_path):
    root = mbeir_tree(tmp_path / "M-BEIR")
    out = _run(root, tmp_path, f"data.pool.test={tmp_path / 'nowhere.jsonl'}")
    assert out.returncode == 2 and f"data.pool.test={tmp_path / 'nowhere.jsonl'}: no such file" in out.stderr
    pool = root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl"  # UniIR's global setting
    pool.write_bytes((root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl").read_bytes())
    out = _run(root, tmp_path, f"data.pool.test={pool}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"toy_task7/test [IT2I]: 8 queries, 8 documents; nothing skipped; candidates from {pool} <-" in out.stdout


def test_the_val_pool_serves_the_dev_split_by_either_name(tmp_path):
    # M-BEIR's dev split is its val (data.dev_split=dev, or a suite's split=dev, read query/val/):
    # the pool given for it as data.pool.val is read under either name, not the tree's own
    from omegaconf import OmegaConf

    root = mbeir_tree(tmp_path / "M-BEIR")
    pool = tmp_path / "my_val_pool.jsonl"
    pool.write_bytes((root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl").read_bytes())
    data = OmegaConf.create({"path": str(root), "format": "mbeir", "dataset": "toy_task7", "pool": {"val": str(pool)}})
    for split in ("val", "dev"):
        assert f"candidates from {pool}" in load_data_split(data, split).report(), split
