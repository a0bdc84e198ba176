"""python -m urlkit.export: the exported folder scores what urlkit.rerank scores.

The folder is loaded the two ways its model card shows, sentence-transformers' CrossEncoder and
plain transformers, and compared with ``urlkit.rerank(run=...)`` on 20 (query, document) pairs of
a tiny run whose LoRA adapters training moved away from zero.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.run_helpers import TOPICS, compose_train, tiny_gemma2_folder, write_small_dataset

import urlkit
from urlkit.build import build_reranker
from urlkit.export import data_label, main, score_folder
from urlkit.inference import TrainedReranker, _as_document, _as_query
from urlkit.model.export import ExportError, ExportSpec, check_exportable, model_card
from urlkit.train import train

# 20 pairs: every query with its own passage, then 8 queries with another topic's passage.
PAIRS = [(query, passage) for _, query, passage in TOPICS] + [
    (TOPICS[i][1], TOPICS[(i + 5) % len(TOPICS)][2]) for i in range(8)
]

# A document about ten times the tiny model's max_length (128 tokens): urlkit cuts it to fit.
LONG = " ".join(f"word{i} alpha beta gamma" for i in range(200))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_small_dataset(root / "data")
    cfg = compose_train(data, "train.lr=5e-3", "train.max_steps=4")
    train(cfg, root / "run")
    main(["--run", str(root / "run"), "--out", str(root / "folder")])  # checks its dev pairs itself
    return root / "run", root / "folder"


def test_exported_folder_scores_what_urlkit_scores(exported):
    run, folder = exported
    reranker = TrainedReranker.from_run(run)
    lora_b = [p for n, p in reranker.built.reranker.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # the merge has something to fold in
    ours = torch.tensor([urlkit.rerank(q, [d], run=run)[0] for q, d in PAIRS])
    theirs = score_folder(folder, PAIRS)
    assert len(PAIRS) == 20 and ours.std() > 0
    for name, scores in theirs.items():
        largest = (torch.tensor(scores) - ours).abs().max().item()
        print(f"max |urlkit - {name}| on 20 pairs: {largest:.2e}")
        assert largest < 1e-4, name


def test_exported_prompt_is_urlkits_token_for_token(exported):
    from sentence_transformers import CrossEncoder

    run, folder = exported
    renderer = TrainedReranker.from_run(run).built.renderer
    instruction = json.loads((folder / "urlkit_reranker.json").read_text())["instruction"]
    assert instruction == "Find the passage that answers the query."  # the run's dataset instruction
    cross = CrossEncoder(str(folder), device="cpu")
    for query, passage in PAIRS[:3]:
        features = cross.preprocess([(query, passage)])
        ids = features["input_ids"][0][features["attention_mask"][0].bool()].tolist()
        q = _as_query(query)
        d = _as_document(passage, 0)
        assert ids == renderer.encode(instruction, q, d).input_ids


def test_long_documents_are_cut_as_urlkit_cuts_them(exported):
    """Only the document is cut, so the answer position stays the last token both ways
    (a prompt cut from the right would lose it and score another position)."""
    run, folder = exported
    pairs = [(PAIRS[0][0], LONG), (PAIRS[1][0], PAIRS[1][1] + " " + LONG), (PAIRS[2][0], "Rain " * 120)]
    renderer = TrainedReranker.from_run(run).built.renderer
    assert all(renderer.encode("", _as_query(q), _as_document(d, 0)).truncated for q, d in pairs)
    ours = torch.tensor([urlkit.rerank(q, [d], run=run)[0] for q, d in pairs])
    for name, scores in score_folder(folder, pairs, batch_size=2).items():
        largest = (torch.tensor(scores) - ours).abs().max().item()
        print(f"max |urlkit - {name}| on long documents: {largest:.2e}")
        assert largest < 1e-4, name


def card_blocks(folder):
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)


def test_every_card_code_block_runs_as_written_and_scores_what_urlkit_scores(exported, tmp_path):
    """Each python block of the written card, run alone in a fresh interpreter (as a reader
    pastes it), prints urlkit's scores of its pairs."""
    run, folder = exported
    blocks = card_blocks(folder)
    assert len(blocks) == 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        printed = torch.tensor(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
        pairs = ast.literal_eval(re.search(r"^pairs = (.*)$", block, re.M).group(1))
        ours = torch.tensor([urlkit.rerank(q, [d], run=run)[0] for q, d in pairs])
        assert len(pairs) == 2 and (printed - ours).abs().max().item() < 1e-4, block


def test_the_cards_transformers_recipe_cuts_long_documents_as_urlkit(exported):
    run, folder = exported
    namespace: dict = {}
    exec(card_blocks(folder)[1], namespace)  # defines prompt_ids (and scores the card's pairs)
    renderer = TrainedReranker.from_run(run).built.renderer
    instruction = json.loads((folder / "urlkit_reranker.json").read_text())["instruction"]
    for query, document in [(PAIRS[0][0], LONG), PAIRS[1], (PAIRS[2][0], "  leading spaces")]:
        ids = renderer.encode(instruction, _as_query(query), _as_document(document, 0)).input_ids
        assert namespace["prompt_ids"](query, document) == ids


def test_another_instruction_reaches_both_sides(exported):
    run, folder = exported
    pairs = PAIRS[:4]
    ours = torch.tensor([urlkit.rerank(q, [d], instruction="Rank by topic.", run=run)[0] for q, d in pairs])
    default = torch.tensor([urlkit.rerank(q, [d], run=run)[0] for q, d in pairs])
    assert (ours - default).abs().max() > 1e-6  # the instruction changes the prompt
    for name, scores in score_folder(folder, pairs, instruction="Rank by topic.").items():
        assert (torch.tensor(scores) - ours).abs().max().item() < 1e-4, name


def test_the_check_says_how_many_pairs_it_scored_and_checks_another_instruction(exported, tmp_path, capsys):
    """The tiny dev split has 8 text pairs: asking 20 checks those 8 and says so; --instruction
    (the folder's default instruction) is checked too, with urlkit given the same instruction."""
    run, _ = exported
    capsys.readouterr()
    main(["--run", str(run), "--out", str(tmp_path / "folder"), "--instruction", "Rank by topic."])
    out = capsys.readouterr().out
    assert "parity on 8 dev pairs (20 asked: the dev split has no more text pairs) with --instruction " \
           "'Rank by topic.': max |urlkit - CrossEncoder| = " in out
    largest = float(out.split("max |urlkit - transformers| = ")[1].split()[0])
    assert largest < 1e-4
    main(["--run", str(run), "--out", str(tmp_path / "unchecked"), "--check", "0"])
    assert "parity check skipped (--check 0)" in capsys.readouterr().out


def test_folder_records_tokens_format_and_card(exported):
    _, folder = exported
    info = json.loads((folder / "urlkit_reranker.json").read_text())
    assert info["yes"] == {"token": "yes", "id": 10407} and info["no"]["id"] == 4607  # SmolLM2's
    assert info["prompt"]["name"] == "urlkit" and info["dtype"] == "float32"
    card = (folder / "README.md").read_text()
    assert "CrossEncoder" in card and "AutoModelForCausalLM" in card and "yes, no = 10407, 4607" in card
    assert (folder / "chat_template.jinja").exists() and (folder / "1_LogitScore" / "config.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    assert not any("lora" in name for name in _safetensor_names(folder))


def test_export_refuses_a_used_folder_and_a_missing_run(exported, tmp_path, capsys):
    run, folder = exported
    with pytest.raises(SystemExit) as used:
        main(["--run", str(run), "--out", str(folder)])
    assert used.value.code == 2 and str(folder) in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        main(["--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert missing.value.code == 2 and "nowhere" in err and "config.yaml" in err


def copied_run(run, tmp_path, status, max_steps=3000, config_edit=("", ""), **info_edits):
    """A copy of ``run`` whose run.json says ``status`` (and ``info_edits``; None: removed) and whose
    config asks for ``max_steps`` (the checkpoint stays at step 4, as a run stopped short of its
    max_steps leaves it) with ``config_edit`` (old, new) replaced once."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    info = {**json.loads((copy / "run.json").read_text()), "status": status, **info_edits}
    (copy / "run.json").write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    config = (copy / "config.yaml").read_text()
    assert "max_steps: 4\n" in config and config.count(config_edit[0]) >= 1
    config = config.replace("max_steps: 4\n", f"max_steps: {max_steps}\n").replace(*config_edit, 1)
    (copy / "config.yaml").write_text(config)
    return copy


def test_the_steps_recorded_are_the_checkpoints_not_max_steps(exported, tmp_path):
    run = copied_run(exported[0], tmp_path, "finished")
    main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    info = json.loads((tmp_path / "folder" / "urlkit_reranker.json").read_text())
    assert info["run"]["steps"] == 4 and info["run"]["max_steps"] == 3000
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "| steps | 4 |" in card and "3000" not in card and "Unfinished" not in card


def test_an_unfinished_run_is_refused_unless_allowed(exported, tmp_path, capsys):
    run = copied_run(exported[0], tmp_path, "interrupted")
    with pytest.raises(SystemExit) as refused:
        main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and str(run / "run.json") in err and "'interrupted'" in err
    assert "--allow-unfinished" in err and not (tmp_path / "folder").exists()
    main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0", "--allow-unfinished"])
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "interrupted at step 4 of 3000" in card
    assert json.loads((tmp_path / "folder" / "urlkit_reranker.json").read_text())["run"]["status"] == "interrupted"


def test_card_names_the_data_and_no_base_model_that_is_not_on_the_hub(exported):
    """The run overrode only data.path (its data config is still named wordsense) and trained
    urlkit's tiny model, which no hub id names."""
    run, folder = exported
    assert "name: wordsense" in (run / "config.yaml").read_text()
    info = json.loads((folder / "urlkit_reranker.json").read_text())
    data = run.parent / "data"
    assert info["run"]["data"] == f"small ({data})"  # its dataset.json's name
    assert info["base_model"] is None and info["model_config"] == "tiny"
    card = (folder / "README.md").read_text()
    header = card.split("---")[1]
    assert "base_model" not in header and "wordsense" not in card and f"| data | small ({data}) |" in card
    assert "urlkit's model config `tiny` (not a hub model)" in card


def test_a_hub_model_is_the_cards_base_model_and_unnamed_data_is_its_path(tmp_path):
    spec = ExportSpec(direction="sft", token_ids=[1, 2], tokens=["yes", "no"], prompt={"name": "urlkit"},
                      instruction="", max_length=64, dtype="float32", base_model="Qwen/Qwen3-0.6B",
                      model_config="Qwen/Qwen3-0.6B")
    assert "\nbase_model: Qwen/Qwen3-0.6B\n---" in model_card(spec).split("\n#")[0]
    from omegaconf import OmegaConf

    (tmp_path / "bare").mkdir()
    assert data_label(OmegaConf.create({"name": "wordsense", "path": str(tmp_path / "bare")})) == str(tmp_path / "bare")


def test_a_bfloat16_card_says_its_scores_are_on_the_bfloat16_grid_and_how_to_avoid_it():
    spec = ExportSpec(direction="sft", token_ids=[1, 2], tokens=["yes", "no"], prompt={"name": "urlkit"},
                      instruction="", max_length=64, dtype="bfloat16", base_model=None, model_config="tiny")
    card = " ".join(model_card(spec).split())
    assert "computes its LM head and logits in bfloat16" in card and "bfloat16's grid" in card
    assert 'model_kwargs={"dtype": torch.float32}' in card and "from_pretrained(folder, dtype=torch.float32)" in card
    assert "grid" not in model_card(ExportSpec(**{**spec.__dict__, "dtype": "float32"}))


def test_training_records_the_dtype_model_dtype_resolved_to(exported):
    assert json.loads((exported[0] / "run.json").read_text())["model_dtype"] == "float32"  # tiny's


@pytest.mark.parametrize("bf16_units", [True, False])
def test_auto_dtype_exports_what_training_chose_not_what_this_machine_would(exported, tmp_path, monkeypatch,
                                                                             capsys, bf16_units):
    """model.dtype=auto: the dtype run.json records from training, whatever this machine has
    (patched both ways); a run that records none falls back to this machine's choice and says so."""
    import urlkit.hardware

    for units in ("cpu_has_bf16_units", "cuda_has_bf16_units"):
        monkeypatch.setattr(urlkit.hardware, units, lambda *args: bf16_units)
    here, other = ("bfloat16", "float32") if bf16_units else ("float32", "bfloat16")
    auto = ("  dtype: float32\n", "  dtype: auto\n")
    run = copied_run(exported[0], tmp_path / "recorded", "finished", config_edit=auto, model_dtype=other)
    main(["--run", str(run), "--out", str(tmp_path / "a"), "--check", "0"])
    info = json.loads((tmp_path / "a" / "urlkit_reranker.json").read_text())
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert info["dtype"] == other == config.get("dtype", config.get("torch_dtype"))
    assert info["run"]["dtype_from"].startswith("run.json")
    old = copied_run(exported[0], tmp_path / "old", "finished", config_edit=auto, model_dtype=None)
    capsys.readouterr()
    main(["--run", str(old), "--out", str(tmp_path / "b"), "--check", "0"])
    assert json.loads((tmp_path / "b" / "urlkit_reranker.json").read_text())["dtype"] == here
    assert f"records no model_dtype (a run from before urlkit recorded it): loading in {here}" in capsys.readouterr().out


@pytest.mark.parametrize("override, reason", [("direction=rand", "random projection"),
                                              ("head.trainable=true", "head.trainable"),
                                              ("model=tiny_vl", "vision-language")])
def test_what_no_causal_lm_scores_is_refused(tmp_path, override, reason):
    cfg = compose_train(write_small_dataset(tmp_path / "data"), override)
    built = build_reranker(cfg, trainable=False)
    with pytest.raises(ExportError, match=reason):
        check_exportable(built.reranker, built.backbone, cfg.direction.name, built.token_ids)


def _safetensor_names(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def test_a_cl_run_in_qwen3_format_exports_the_yes_logit(tmp_path):
    """direction=cl scores logit(yes) alone (LogitScore without a false token); the prompt is
    Qwen3-Reranker's format, written by its own chat template inside the exported one."""
    data = write_small_dataset(tmp_path / "data")
    cfg = compose_train(data, "train.lr=5e-3", "train.max_steps=3", "weight=cl", "direction=cl",
                        "prompt=qwen3_reranker")
    train(cfg, tmp_path / "run")
    main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "folder"), "--check", "0"])
    info = json.loads((tmp_path / "folder" / "urlkit_reranker.json").read_text())
    assert info["score"] == "logit(yes)" and info["no"] is None and info["prompt"]["name"] == "qwen3_reranker"
    pairs = PAIRS[:6]
    ours = torch.tensor([urlkit.rerank(q, [d], run=tmp_path / "run")[0] for q, d in pairs])
    for name, scores in score_folder(tmp_path / "folder", pairs).items():
        assert (torch.tensor(scores) - ours).abs().max().item() < 1e-4, name
    text = TrainedReranker.from_run(tmp_path / "run").built.renderer.render_text(
        info["instruction"], _as_query(pairs[0][0]), _as_document(pairs[0][1], 0))
    assert text.startswith("<|im_start|>system\nJudge whether the Document") and text.endswith("<think>\n\n</think>\n\n")


def test_a_damaged_config_is_an_error_naming_it(exported, tmp_path, capsys):
    """A config.yaml cut short (a copy interrupted) stops the export with the file's name, exit 2."""
    run = copied_run(exported[0], tmp_path, "finished")
    with (run / "config.yaml").open("a") as config:
        config.write("model: [cut short\n")
    with pytest.raises(SystemExit) as damaged:
        main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    err = capsys.readouterr().err
    assert damaged.value.code == 2 and f"{run / 'config.yaml'} cannot be read" in err
    assert not (tmp_path / "folder").exists()


@pytest.mark.parametrize("record", ['{"status": "finis', "[1, 2]"])
def test_a_damaged_run_json_is_an_error_naming_it(exported, tmp_path, capsys, record):
    """run.json cut short or not an object: export and inference stop with its name, exit 2."""
    from urlkit.inference import main as inference_main

    run = copied_run(exported[0], tmp_path, "finished")
    (run / "run.json").write_text(record)
    for command in (lambda: main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"]),
                    lambda: inference_main(["--run", str(run), "--query", "q", "--doc", "d"])):
        with pytest.raises(SystemExit) as damaged:
            command()
        err = capsys.readouterr().err
        assert damaged.value.code == 2 and f"error: {run / 'run.json'} " in err
    assert not (tmp_path / "folder").exists()


def test_a_run_without_a_dev_split_exports_and_says_the_check_is_skipped(exported, tmp_path, capsys):
    """The run's data has no dev split (training went on without a dev evaluation): the folder
    is written, the export exits 0 and says why it checked no pairs, naming the file looked for."""
    data = tmp_path / "data"
    shutil.copytree(exported[0].parent / "data", data)
    (data / "dev.jsonl").unlink()
    run = copied_run(exported[0], tmp_path, "finished", config_edit=(str(exported[0].parent / "data"), str(data)))
    out = main(["--run", str(run), "--out", str(tmp_path / "folder")])
    said = capsys.readouterr().out
    assert out == tmp_path / "folder" and (out / "urlkit_reranker.json").is_file()
    assert "parity check skipped (the run's data has no dev split" in said and "dev.jsonl" in said


def test_an_export_that_fails_midway_leaves_no_half_folder(exported, tmp_path, monkeypatch):
    """The weights are written, then the CrossEncoder modules fail (a full disk, a kill): nothing
    appears under --out (such a folder would load, with another score), a killed export's staging
    folder is cleared by the next, and the next export writes the folder."""
    from sentence_transformers import CrossEncoder

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(CrossEncoder, "save", fail)
        with pytest.raises(OSError, match="No space"):
            main(["--run", str(exported[0]), "--out", str(tmp_path / "folder"), "--check", "0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / ".folder.999999999.export-tmp").mkdir()  # a killed export's (no such process)
    main(["--run", str(exported[0]), "--out", str(tmp_path / "folder"), "--check", "0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    assert (tmp_path / "folder" / "modules.json").is_file() and (tmp_path / "folder" / "README.md").is_file()
    assert f"CrossEncoder({str(tmp_path / 'folder')!r})" in (tmp_path / "folder" / "README.md").read_text()


def test_a_run_whose_data_is_not_here_stops_before_writing_and_says_check_0(exported, tmp_path, capsys):
    """A run folder copied to another machine without its data: the parity check cannot draw its
    pairs, so the export stops before writing anything (a complete folder under an exit 2 would be
    refused as 'not empty' by the rerun), naming the path and --check 0, which then exports."""
    gone = tmp_path / "elsewhere"
    run = copied_run(exported[0], tmp_path, "finished", config_edit=(str(exported[0].parent / "data"), str(gone)))
    with pytest.raises(SystemExit) as missing:
        main(["--run", str(run), "--out", str(tmp_path / "folder")])
    err = capsys.readouterr().err
    assert missing.value.code == 2 and str(gone) in err and "--check 0" in err
    assert not (tmp_path / "folder").exists()
    main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    assert (tmp_path / "folder" / "urlkit_reranker.json").is_file()


def test_a_local_folder_backbone_is_no_base_model_on_the_card(exported, tmp_path):
    """model.source=hub with model.name a local folder (here the exported tiny model, trained on):
    the hub would reject a path as the card's base_model, so the card names none."""
    run = copied_run(exported[0], tmp_path, "finished")
    config = (run / "config.yaml").read_text()
    assert "  name: tiny\n  source: tiny\n" in config
    (run / "config.yaml").write_text(config.replace("  name: tiny\n  source: tiny\n",
                                                    f"  name: {exported[1]}\n  source: hub\n", 1))
    info = json.loads((run / "run.json").read_text())  # as a run trained on the folder records it
    folder = {"source": "folder", "path": str(Path(exported[1]).resolve())}
    (run / "run.json").write_text(json.dumps({**info, "base_model": folder}))
    main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    assert json.loads((tmp_path / "folder" / "urlkit_reranker.json").read_text())["base_model"] is None
    assert "base_model" not in (tmp_path / "folder" / "README.md").read_text().split("---")[1]


def test_a_gemma2_folder_scores_uncapped_logits_as_urlkit(tmp_path):
    """Gemma 2 caps its output logits (cap * tanh(logit / cap)); urlkit's score reads the LM-head
    rows uncapped, so the folder is written without the cap and scores what urlkit scores (the
    export's own float32 check passes instead of failing at 2e-2)."""
    base = tiny_gemma2_folder(tmp_path / "gemma2")
    cfg = compose_train(write_small_dataset(tmp_path / "data"), "model.source=hub", f"model.name={base}",
                        "train.lr=5e-2")
    train(cfg, tmp_path / "run")
    main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "folder")])  # its check: < 1e-4
    assert json.loads((tmp_path / "folder" / "config.json").read_text())["final_logit_softcapping"] is None
    pairs = PAIRS[:6]
    ours = torch.tensor([urlkit.rerank(q, [d], run=tmp_path / "run")[0] for q, d in pairs])
    for name, scores in score_folder(tmp_path / "folder", pairs).items():
        assert (torch.tensor(scores) - ours).abs().max().item() < 1e-4, name


def test_an_empty_out_folder_that_cannot_be_replaced_receives_the_files(exported, tmp_path, monkeypatch):
    """--out an empty mount point (a container's volume): renaming the written folder over it
    fails (EBUSY), so its files are moved into it."""
    import errno

    import urlkit.model.export as written

    real = os.replace

    def busy(src, dst):
        if str(dst) == str(tmp_path / "mounted"):
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(src, dst)

    (tmp_path / "mounted").mkdir()
    monkeypatch.setattr(written.os, "replace", busy)
    main(["--run", str(exported[0]), "--out", str(tmp_path / "mounted"), "--check", "0"])
    assert (tmp_path / "mounted" / "modules.json").is_file() and (tmp_path / "mounted" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mounted"]


def test_a_folder_without_run_json_is_said_to_have_none_not_status_none(exported, tmp_path, capsys):
    run = copied_run(exported[0], tmp_path, "finished")
    (run / "run.json").unlink()
    with pytest.raises(SystemExit) as refused:
        main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"{run / 'run.json'}: no such file" in err and "status None" not in err
    assert "--allow-unfinished" in err and not (tmp_path / "folder").exists()


def test_a_damaged_metrics_json_is_an_error_naming_it(exported, tmp_path, capsys):
    run = copied_run(exported[0], tmp_path, "finished")
    (run / "metrics.json").write_text('{"test/ndcg@10": 0.5')
    with pytest.raises(SystemExit) as damaged:
        main(["--run", str(run), "--out", str(tmp_path / "folder"), "--check", "0"])
    err = capsys.readouterr().err
    assert damaged.value.code == 2 and f"error: {run / 'metrics.json'} cannot be read" in err
    assert not (tmp_path / "folder").exists()


@pytest.mark.timeout(300)
def test_the_card_labels_the_final_metrics_with_the_split_they_scored(tmp_path):
    """data.test_split=dev: the final evaluation scored dev, and metrics.json's keys still say
    test/ (the role); the card showed them as test metrics. run.json now records the split
    scored, and the card and urlkit_reranker.json label the metrics with it."""
    data = write_small_dataset(tmp_path / "data")
    train(compose_train(data, "data.test_split=dev", "train.max_steps=2"), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["final_split"] == {"dataset": "small", "split": "dev"}
    assert "test/ndcg@10" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "folder"), "--check", "0"])
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "| dev/ndcg@10 |" in card and "| bm25/dev/ndcg@10 |" in card and "test/" not in card
    assert "| final metrics | the run's `dev` split |" in card
    run = json.loads((tmp_path / "folder" / "urlkit_reranker.json").read_text())["run"]
    assert run["final_split"] == "dev" and "dev/ndcg@10" in run["metrics"] and "test/ndcg@10" not in run["metrics"]
    # a run from before the record: its config's data.test_split says which split it was
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    del info["final_split"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "older"), "--check", "0"])
    assert "| dev/ndcg@10 |" in (tmp_path / "older" / "README.md").read_text()
