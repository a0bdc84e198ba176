"""The Hydra entry points behave as Hydra users expect; every trainer config builds a Trainer."""

from __future__ import annotations

import re
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from urlkit.build import trainer_arguments
from urlkit.paths import REPO_ROOT


def _cli(*args, module="urlkit.run"):
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def test_help_lists_the_config_groups():
    out = _cli("--help")
    assert out.returncode == 0
    for group in ("weight", "direction", "model", "data", "trainer", "logger"):
        assert f"{group}:" in out.stdout


@pytest.mark.parametrize("module", ["urlkit.run", "urlkit.evaluate"])
def test_help_opens_with_what_the_command_does_and_how_to_start(module):
    """A newcomer's first ``--help`` names the command, says what it does and shows a first
    command line (Hydra's default header is only "<app> is powered by Hydra.")."""
    out = _cli("--help", module=module)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"python -m {module}: "), first
    assert "powered by Hydra" not in out.stdout.split("== Configuration groups ==")[0]
    assert re.search(rf"^  python -m {re.escape(module)} \S+=", out.stdout, flags=re.MULTILINE), "an example command"


def test_cfg_job_prints_the_composed_config():
    out = _cli("weight=cl", "direction=rand", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.weight.name == "cl" and cfg.direction.name == "rand"
    assert cfg.model.lora.r == 16 and cfg.train.lr == 2e-4  # the default experiment
    probing = OmegaConf.create(_cli("experiment=probing", "--cfg", "job").stdout)
    assert probing.train.lr == 1e-4 and probing.data.n_negatives == 4  # the paper's probing setting


def test_a_wrong_group_value_lists_the_valid_ones():
    out = _cli("weight=sfx", "--cfg", "job")
    assert out.returncode != 0
    assert "weight" in out.stderr and "sft" in out.stderr and "tau_mask" in out.stderr


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp"])
def test_every_trainer_config_composes_and_builds_a_trainer(trainer):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer}", "logger=none"])
    args = trainer_arguments(cfg.trainer)
    if args.get("accelerator") == "gpu":  # no GPU here: the same strategy on CPU processes
        args.update(accelerator="cpu", devices=2 if args.get("strategy") else 1, precision="bf16-mixed")
    if trainer == "fsdp":
        # Lightning builds FSDP only on CUDA; here the strategy object itself must build
        from lightning.pytorch.strategies import FSDPStrategy

        assert isinstance(args["strategy"], FSDPStrategy)
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="requires a GPU"):
                L.Trainer(**args, logger=False, enable_checkpointing=False, max_steps=1)
            return
    built = L.Trainer(**args, logger=False, enable_checkpointing=False, max_steps=1)
    if trainer == "ddp":
        assert type(built.strategy).__name__ == "DDPStrategy"


def test_a_run_prints_lightnings_lines_once_and_no_product_tips(tmp_path):
    """Under Hydra, Lightning's own console handler doubled its lines ("GPU available" twice, in
    two formats); its "Tip: try installing litlogger" lines and its pytree deprecation warning
    are noise no user can act on. One line each, kept in the run's log file. The training bar
    counts optimizer steps: with accumulate=2 it ended at "4/2" (micro-batches)."""
    from helpers.run_helpers import write_small_dataset

    data = write_small_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    out = _cli("model=tiny", "logger=none", "train.max_steps=2", "train.accumulate=2", "train.warmup_steps=1", "eval.every_n_steps=0",
               "eval.test_queries=2", "eval.depth=4", "eval.batch_size=4", "data.n_negatives=2",
               f"data.path={data}", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout + out.stderr
    assert printed.count("GPU available") == 1, printed[-3000:]
    assert "Tip" not in printed and "litlogger" not in printed and "LeafSpec" not in printed
    assert "GPU available" in (run_dir / "run.log").read_text()
    bars = [line for line in re.split(r"[\r\n]", printed) if line.startswith(("training steps", "Epoch 0"))]
    assert bars and " 2/2 " in bars[-1] and "4/2" not in printed and "/-2" not in printed, bars[-3:]


def test_the_tqdm_bar_counts_optimizer_steps_too(tmp_path, monkeypatch, capfd):
    """Without rich installed Lightning draws tqdm's bar: the same step count (forced here, since
    this machine has rich)."""
    import lightning.pytorch.utilities.imports as imports
    from helpers.run_helpers import compose_train, write_small_dataset

    from urlkit.train import train

    monkeypatch.setattr(imports, "_RICH_AVAILABLE", False)
    data = write_small_dataset(tmp_path / "data")
    cfg = compose_train(data, "train.max_steps=2", "train.accumulate=2", "eval.test_queries=2",
                        "eval.depth=4", "++trainer.enable_progress_bar=true")  # fmt: skip
    train(cfg, tmp_path / "run")
    printed = "".join(capfd.readouterr())
    bars = [line for line in re.split(r"[\r\n]", printed) if line.startswith("Epoch 0")]
    assert bars and " 2/2 " in bars[-1] and "4/2" not in printed, bars[-3:]
