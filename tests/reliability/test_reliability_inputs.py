"""Bad input at every entry point: one clear message and a non-zero exit, never a bare traceback.

One test per row of the table in docs/reliability.md. Config mistakes run the real
``python -m urlkit.run`` as a subprocess (they fail before torch is imported: about a second
each); mistakes found after the model loads call the entry point's ``main()`` in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.run_helpers import write_small_dataset

from urlkit.errors import EXIT_BAD_INPUT, reported_errors
from urlkit.paths import REPO_ROOT

TINY = ["model=tiny", "logger=none", "train.max_steps=2", "eval.every_n_steps=0", "data.n_negatives=3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("inputs") / "small")


def cli(*args, module="urlkit.run", env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )  # fmt: skip


def in_process(main, argv, capsys, monkeypatch):
    """Run a Hydra entry point's ``main()`` with ``argv``; returns (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["urlkit", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


def assert_one_clear_error(status, stderr, *expected):
    assert status == EXIT_BAD_INPUT, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    for text in expected:
        assert text in errors[0], errors[0]


# -- config: Hydra's own checks (exit 1, with the valid options) ------------------------------
def test_unknown_config_key(tmp_path):
    out = cli("train.max_step=5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1
    assert "Could not override 'train.max_step'" in out.stderr and "Key 'max_step' is not in struct" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_config_group_option(tmp_path):
    out = cli("direction=sf", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1
    assert "Could not find 'direction/sf'" in out.stderr and "sft" in out.stderr and "rand" in out.stderr


# -- config values: urlkit's checks, before any work ------------------------------------------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.nonfinite=skp", "train.nonfinite='skp' is not one of stop, skip"),
        ("train.max_steps=-1", "train.max_steps=-1 must be an integer >= 1"),
        ("data.hard_fraction=2", "data.hard_fraction=2 must be a number >= 0 and <= 1"),
        ("train.lr=fast", "train.lr='fast' must be a number > 0"),
        ("logger=wandb logger.mode=onlin", "logger.mode='onlin' is not one of auto, online, offline, disabled"),
        ("data.retriever=trec", "data.retriever=trec needs data.run_file=<a TREC run file>"),
        ("data.n_negatives=0", "data.n_negatives=0 must be an integer >= 1"),
        ("data.mixture={a:{weight:1},b:{hard_fraction:1.5}}", "data.mixture.b.hard_fraction=1.5 must be a number >= 0 and <= 1"),
        ("data.mixture={a:{weight:1},b:{weigth:3}}", "data.mixture.b: no data key weigth (a source takes weight and"),
        ("data.mixture={a:{weight:1},b:{path:/nowhere}}", "data.mixture.b.path=/nowhere: no such file or directory"),
        ("data.mixture={a:{weight:1},b:{random_from:corpse}}", "data.mixture.b.random_from='corpse' is not one of pool"),
        ("data.mixture={a:{weight:0}}", "data.mixture.a.weight=0 must be a number > 0"),
    ],
    ids=["unknown-choice", "negative-steps", "out-of-range", "not-a-number", "logger-mode", "trec-without-run-file",
         "no-negatives", "mixture-range", "mixture-typo", "mixture-path", "mixture-choice", "mixture-weight"],
)
def test_a_config_value_urlkit_cannot_use(tmp_path, override, expected):
    overrides = override.split()
    groups = {o.split("=")[0] for o in overrides}
    data = [f"data.path={REPO_ROOT / 'data' / 'wordsense'}"]  # a mixture's sources read data.path's keys
    out = cli(*[o for o in TINY if o.split("=")[0] not in groups], *data, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_clear_error(out.returncode, out.stderr, expected)
    assert not (tmp_path / "run" / "config.yaml").exists()  # failed before any work


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed=abc", "seed='abc' must be an integer >= 0"),
        ("seed=1.5", "seed=1.5 must be an integer >= 0"),
        ("seed=-1", "seed=-1 must be an integer >= 0"),
        ("head.num_tokens=abc", "head.num_tokens='abc' must be an integer >= 2"),
        ("head.trainable=maybe", "head.trainable='maybe' must be true or false"),
        ("head.trainable='false'", "head.trainable='false' must be true or false"),
    ],
    ids=["seed-text", "seed-float", "seed-negative", "num-tokens-text", "trainable-text", "trainable-quoted"],
)
def test_a_value_of_the_wrong_type(tmp_path, override, expected):
    # seed and head.num_tokens were a ValueError traceback (exit 1) from deep in the run, a
    # negative seed a random one, and head.trainable any non-empty string: trainable
    out = cli(*TINY, f"data.path={REPO_ROOT / 'data' / 'wordsense'}", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_clear_error(out.returncode, out.stderr, expected)
    assert not (tmp_path / "run" / "config.yaml").exists()  # failed before any work


def test_a_required_value_left_out(tmp_path):
    out = cli(*TINY, "data.path=null", f"hydra.run.dir={tmp_path}")
    assert_one_clear_error(out.returncode, out.stderr, "data.path must be given: data.path=<")


# -- paths ------------------------------------------------------------------------------------
def test_a_data_path_that_does_not_exist(tmp_path):
    out = cli(*TINY, f"data.path={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_clear_error(out.returncode, out.stderr, f"data.path={tmp_path / 'nowhere'}: no such file or directory")


def test_a_run_file_that_does_not_exist(tmp_path, dataset):
    out = cli(*TINY, f"data.path={dataset}", "data.retriever=trec", "data.run_file=missing.trec",
              f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_clear_error(out.returncode, out.stderr, "data.run_file=missing.trec: no such file")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    out = cli(f"resume={tmp_path / 'nowhere'}")
    assert_one_clear_error(out.returncode, out.stderr, "not a urlkit run directory (no config.yaml)")
    assert not (tmp_path / "nowhere").exists()  # refused before Hydra made it its run directory


def test_resume_of_an_evaluation_folder_is_refused_before_hydra_writes_into_it(tmp_path):
    evaluation = tmp_path / "evaluation"  # what python -m urlkit.evaluate leaves: a config.yaml, no run
    (evaluation / ".hydra").mkdir(parents=True)
    (evaluation / "config.yaml").write_text("run_dir: runs/x\ndepth: 100\n")
    (evaluation / ".hydra" / "config.yaml").write_text("depth: 100\n")
    (evaluation / "metrics.json").write_text("{}")
    before = {p: p.read_bytes() for p in evaluation.rglob("*") if p.is_file()}
    out = cli(f"resume={evaluation}")
    assert_one_clear_error(out.returncode, out.stderr, f"resume={evaluation}: not a urlkit training run directory")
    assert {p: p.read_bytes() for p in evaluation.rglob("*") if p.is_file()} == before  # no run.log, .hydra kept


def test_a_new_run_in_the_directory_of_another_run(tmp_path, dataset):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    out = cli(*TINY, f"data.path={dataset}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_clear_error(out.returncode, out.stderr, "already holds a urlkit run", f"resume={tmp_path / 'run'}")
    assert (tmp_path / "run" / "config.yaml").read_text() == "seed: 0\n"  # untouched


# -- data and model: found after loading, reported the same way (main() in-process) -----------
def test_a_corrupt_line_in_the_data(tmp_path, dataset, capsys, monkeypatch):
    from urlkit.run import main

    broken = write_small_dataset(tmp_path / "broken")
    lines = (broken / "train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-7]  # a line cut short, as by an interrupted download
    (broken / "train.jsonl").write_text("\n".join(lines) + "\n")
    status, err = in_process(main, [*TINY, f"data.path={broken}", f"hydra.run.dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert_one_clear_error(status, err, f"{broken / 'train.jsonl'}:3:")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "train.jsonl:3" in info["error"]


def test_a_dataset_too_small_for_the_negatives(tmp_path, capsys, monkeypatch):
    from urlkit.run import main

    tiny = tmp_path / "one-doc"
    tiny.mkdir()
    (tiny / "corpus.jsonl").write_text(json.dumps({"id": "d1", "text": "Cats sleep in warm places."}) + "\n")
    for split in ("train", "test"):
        (tiny / f"{split}.jsonl").write_text(json.dumps({"id": "q1", "text": "cats", "positives": ["d1"]}) + "\n")
    status, err = in_process(main, [*TINY, f"data.path={tiny}", f"hydra.run.dir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert_one_clear_error(status, err, "too small for 3 negatives", "query 'q1' has no document that is not a positive")


def test_image_queries_on_a_text_only_backbone(tmp_path, capsys, monkeypatch):
    # validate() renders the queries first: this was an AttributeError traceback (exit 1)
    from urlkit.run import main

    argv = ["model=tiny", "logger=none", "train.max_steps=2", "eval.every_n_steps=0", "data=emoji_i2t",
            f"hydra.run.dir={tmp_path / 'run'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, "image on a text-only backbone: query")


def test_a_token_label_that_is_not_one_token(tmp_path, dataset, capsys, monkeypatch):
    from urlkit.run import main

    argv = [*TINY, f"data.path={dataset}", "head.tokens=[yes,definitely not]", f"hydra.run.dir={tmp_path / 'run'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, "head.tokens=['yes', 'definitely not']", "'definitely not' is not a single token")


def test_a_model_that_cannot_be_loaded_offline(tmp_path, dataset, capsys, monkeypatch):
    from urlkit.run import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # nothing cached
    argv = [*TINY, "model=qwen3_0_6b", f"data.path={dataset}", f"hydra.run.dir={tmp_path / 'run'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, "cannot load the model 'Qwen/Qwen3-0.6B'", "offline", "model=smollm2_135m")


# -- the other entry points ---------------------------------------------------------------------
def test_evaluate_a_run_directory_that_does_not_exist(tmp_path, capsys, monkeypatch):
    from urlkit.evaluate import main

    argv = [f"run_dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'eval'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, "is not a urlkit run directory (no config.yaml)")


@pytest.mark.parametrize(("text", "expected"), [
    ("data: [cut short\n", "config.yaml cannot be read (ParserError: while parsing a flow sequence"),
    ("- a list\n", "config.yaml is not a run config (a YAML ListConfig, not a mapping)"),
], ids=["damaged", "a-list"])  # fmt: skip
def test_evaluate_a_run_whose_config_is_damaged(tmp_path, capsys, monkeypatch, text, expected):
    """A hand-edited or cut-short config.yaml: one line naming the file, not a YAML parser's
    traceback (before: a traceback, and Hydra's own formatting failed on it)."""
    from urlkit.evaluate import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(text)
    argv = [f"run_dir={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'eval'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, str(tmp_path / "run" / "config.yaml"), expected)


def test_evaluate_with_a_value_out_of_range(tmp_path, capsys, monkeypatch):
    from urlkit.evaluate import main

    status, err = in_process(main, ["model=none", "depth=0", f"hydra.run.dir={tmp_path}"], capsys, monkeypatch)
    assert_one_clear_error(status, err, "depth=0 must be an integer >= 1")


@pytest.mark.parametrize("extra", [[], ["--docs-file", "missing.txt"]], ids=["no-run", "no-docs-file"])
def test_inference_with_a_missing_run_or_file(tmp_path, capsys, extra):
    from urlkit.inference import main

    argv = ["--run", str(tmp_path / "nowhere"), "--query", "q", "--doc", "d"] if not extra else [
        "--run", str(tmp_path), "--query", "q", *extra]  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main(argv)
    expected = "is not a urlkit run directory" if not extra else "No such file or directory: 'missing.txt'"
    assert_one_clear_error(exited.value.code, capsys.readouterr().err, expected)


# -- what is not bad input keeps its traceback -------------------------------------------------
def test_a_bug_outside_urlkit_keeps_its_traceback():
    with pytest.raises(ValueError, match="invalid literal"):
        with reported_errors():
            int("not a number")  # a ValueError raised outside urlkit's code: a bug, not bad input


def test_hydra_full_error_shows_the_traceback_of_bad_input_too(tmp_path):
    out = cli(*TINY, "train.nonfinite=skp", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == EXIT_BAD_INPUT
    assert "Traceback" in out.stderr and out.stderr.rstrip().endswith("error: train.nonfinite='skp' is not one of stop, skip")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("weight.name=nope", "unknown weight 'nope'"),
        ("direction.name=up", "direction.name='up'"),
    ],
    ids=["weight", "direction"],
)
def test_a_loss_choice_the_loss_does_not_know(tmp_path, dataset, capsys, monkeypatch, override, expected):
    """The loss is pure torch (its LossInputError is no UrlkitError): urlkit.build checks the
    config's weight and direction against it and reports a ConfigError before the first step."""
    from urlkit.run import main

    argv = [*TINY, f"data.path={dataset}", override, f"hydra.run.dir={tmp_path / 'run'}"]
    status, err = in_process(main, argv, capsys, monkeypatch)
    assert_one_clear_error(status, err, expected)
    assert not (tmp_path / "run" / "history.csv").exists()  # no step was taken
