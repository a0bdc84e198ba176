"""urlkit.rerank scores through the training scorer; a merged LoRA gives the same scores."""

from __future__ import annotations

import pytest
import torch
from helpers.run_helpers import TOPICS, compose_train, write_small_dataset

import urlkit
from urlkit.inference import TrainedReranker, main, merge_lora
from urlkit.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    data = write_small_dataset(root / "data")
    # a larger LoRA init scale would be nicer, but 3 steps at a high lr make B non-zero
    cfg = compose_train(data, "train.lr=5e-3", "train.max_steps=4")
    train(cfg, root / "run")
    return root / "run"


def test_api_scores_documents_in_order_and_matches_the_training_scorer(trained_run):
    docs = ["Cats sleep in warm places.", "A saw cuts wood.", "Rain falls from clouds."]
    scores = urlkit.rerank("where do cats sleep", docs, run=trained_run)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    # the same documents in another order get the same scores (no batch effects)
    again = urlkit.rerank("where do cats sleep", docs[::-1], run=trained_run)
    assert again[::-1] == pytest.approx(scores, abs=1e-5)


def test_merged_lora_scores_agree_with_unmerged(trained_run):
    reranker = TrainedReranker.from_run(trained_run)
    lora_b = [p for n, p in reranker.built.reranker.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # training moved the adapters
    docs = ["Cats sleep in warm places.", "A saw cuts wood.", "Walk a dog on a leash."]
    unmerged = torch.tensor(reranker.score("where do cats sleep", docs))
    assert merge_lora(reranker.built.reranker) > 0
    merged = torch.tensor(reranker.score("where do cats sleep", docs))
    largest = (merged - unmerged).abs().max().item()
    print(f"largest |merged - unmerged| score difference: {largest:.3e}")
    assert largest < 1e-4


def test_cli_prints_a_ranking(trained_run, capsys):
    ranked = main(["--run", str(trained_run), "--query", "cutting wood", "--doc", "A saw cuts wood.", "--doc", "Tea."])
    out = capsys.readouterr().out
    assert len(ranked) == 2 and "A saw cuts wood." in out and out.strip().startswith("1")


@pytest.mark.timeout(240)
def test_tuning_on_dev_scores_the_dev_split_and_says_so(tmp_path, capsys):
    # data.test_split=dev: the README's way to choose settings without reading the test split
    data = write_small_dataset(tmp_path / "data")
    train(compose_train(data, "data.test_split=dev", "train.max_steps=1"), tmp_path / "run")
    out = capsys.readouterr().out
    assert "test metrics on small/dev" in out and "small/test" not in out
    per_query = sorted(p.name for p in (tmp_path / "run" / "per_query").iterdir())
    assert {"small_dev_bm25.csv", "small_dev_reranker.csv"} <= set(per_query)
    assert not [name for name in per_query if "_test_" in name]
    dev_ids = {line.split(",")[0] for line in (tmp_path / "run/per_query/small_dev_reranker.csv").read_text().splitlines()[1:]}
    assert dev_ids == {f"dev-{name}" for name, _, _ in TOPICS[:4]}


def _copy(run, tmp_path):
    import shutil

    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_a_damaged_checkpoint_is_an_error_naming_it(trained_run, tmp_path, capsys):
    """last.ckpt cut short (a copy interrupted): the CLI says which file, exit 2, no traceback."""
    run = _copy(trained_run, tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(SystemExit) as damaged:
        main(["--run", str(run), "--query", "q", "--doc", "d"])
    err = capsys.readouterr().err
    assert damaged.value.code == 2 and f"error: {ckpt}: not a readable checkpoint" in err


@pytest.mark.parametrize("edit", [("  r: 4\n", "  r: 8\n"), ("trainable: false", "trainable: true")])
def test_a_checkpoint_that_does_not_match_the_config_is_refused(trained_run, tmp_path, edit):
    """config.yaml edited after training (another LoRA rank; a trainable head that the checkpoint
    does not hold, which would have scored with the untrained copy): an error naming both files."""
    from urlkit.build import load_trained
    from urlkit.data.format import DataError

    run = _copy(trained_run, tmp_path)
    config = (run / "config.yaml").read_text()
    assert config.count(edit[0]) == 1
    (run / "config.yaml").write_text(config.replace(*edit))
    with pytest.raises(DataError, match="does not match") as refused:
        load_trained(run)
    assert str(run / "checkpoints" / "last.ckpt") in str(refused.value) and "config.yaml" in str(refused.value)


def test_rerank_loads_a_run_again_once_its_checkpoint_changed(trained_run, tmp_path):
    """urlkit.rerank caches the loaded run; a run resumed in the same process (a notebook that
    scores, trains on, scores again) writes a new last.ckpt, which the next call scores with."""
    run = _copy(trained_run, tmp_path)
    docs = ["Cats sleep in warm places.", "A saw cuts wood.", "Walk a dog on a leash."]
    before = urlkit.rerank("where do cats sleep", docs, run=run)
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    for name, value in saved["state_dict"].items():  # what more training steps would do
        if "lora_B" in name:
            saved["state_dict"][name] = value * 3
    torch.save(saved, ckpt)
    after = urlkit.rerank("where do cats sleep", docs, run=run)
    fresh = TrainedReranker.from_run(run).score("where do cats sleep", docs)
    assert after == pytest.approx(fresh, abs=1e-6) and max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-4


def test_an_expanded_token_set_is_the_one_the_run_trained_with_after_its_data_grew(tmp_path):
    """head.num_tokens > 2: training ranks the extra tokens on its data; loading the run takes the
    set run.json records, so queries appended to the training file since (which rank others:
    ' incre' for ' festivities' here) change neither the set nor the scores."""
    import json

    from urlkit.build import load_trained

    data = write_small_dataset(tmp_path / "data")
    train(compose_train(data, "head.num_tokens=6", "head.token_sample=32", "train.lr=5e-3"), tmp_path / "run")
    trained = load_trained(tmp_path / "run")[0].token_ids
    docs = ["Cats sleep in warm places.", "A saw cuts wood."]
    before = TrainedReranker.from_run(tmp_path / "run").score("where do cats sleep", docs)
    with (data / "train.jsonl").open("a") as f:
        for i in range(12):
            f.write(json.dumps({"id": f"new{i}", "text": f"completely different question number {i} about zebras",
                                "positives": ["d-cats"]}) + "\n")
    built, _ = load_trained(tmp_path / "run")
    assert len(trained) == 6 and built.token_ids == trained
    assert TrainedReranker.from_run(tmp_path / "run").score("where do cats sleep", docs) == pytest.approx(before, abs=1e-6)


def auto_dtype_copy(run, folder, recorded):
    """A copy of ``run`` trained with model.dtype=auto whose run.json says auto chose ``recorded``."""
    import json
    import shutil

    from omegaconf import OmegaConf

    shutil.copytree(run, folder)
    cfg = OmegaConf.load(folder / "config.yaml")
    cfg.model.dtype = "auto"
    OmegaConf.save(cfg, folder / "config.yaml")
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "model_dtype": recorded}))
    return folder


@pytest.mark.timeout(300)
@pytest.mark.parametrize("bf16_units", [True, False])
def test_auto_dtype_scores_in_the_dtype_training_chose_whatever_this_machine_has(
        trained_run, tmp_path, monkeypatch, capsys, bf16_units):
    """model.dtype=auto resolves per machine: urlkit.rerank and python -m urlkit.evaluate load the
    backbone in the dtype run.json records from training (as export does), with this machine's
    bf16 units patched both ways; model.dtype=... given to the evaluation still wins. Where the
    run trained in bfloat16 and this machine has no bf16 units, a note says it is slow."""
    import sys

    from omegaconf import OmegaConf

    import urlkit.evaluate
    import urlkit.hardware

    for units in ("cpu_has_bf16_units", "cuda_has_bf16_units"):
        monkeypatch.setattr(urlkit.hardware, units, lambda *args: bf16_units)
    here, other = ("bfloat16", "float32") if bf16_units else ("float32", "bfloat16")
    run = auto_dtype_copy(trained_run, tmp_path / "run", other)
    capsys.readouterr()
    assert TrainedReranker.from_run(run).built.backbone.model.dtype == getattr(torch, other)
    said = capsys.readouterr().out
    assert ("no bf16 matrix units" in said) == (other == "bfloat16")
    assert TrainedReranker.from_run(run, dtype=here).built.backbone.model.dtype == getattr(torch, here)

    for name, asked, expected in (("recorded", [], other), ("asked", [f"model.dtype={here}"], here)):
        monkeypatch.setattr(sys, "argv", ["urlkit.evaluate", f"run_dir={run}", f"output_root={tmp_path / name}",
                                          "max_queries=2", "depth=3", "batch_size=8", *asked])
        urlkit.evaluate.main()
        (folder,) = (tmp_path / name / "evaluations").iterdir()
        assert OmegaConf.load(folder / "config.yaml").model.dtype == expected  # what scored
