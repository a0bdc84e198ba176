"""``python -m helpers.instrumented_run <urlkit.run arguments>``: urlkit.run with test
instruments installed in every process of the job (Lightning's launcher starts each rank with
this same module), for the multi-process tests of tests/training/test_distributed.py.

* ``URLKIT_TEST_POISON=<text>``: the training scores of prompts containing ``text`` are NaN.
* ``URLKIT_TEST_SYNC_LOG=<path>``: every gradient bucket DDP all-reduces appends a line
  ``<global step> <bucket index>`` to ``<path>.<rank>`` (a DDP communication hook wrapping
  the default all-reduce), to count the gradient synchronisations of each step.
* ``URLKIT_TEST_FREEZE=<step>:<path>``: every rank stops before the batch after optimizer
  step ``step`` (whose history row and checkpoint are written by then), writes
  ``<path>.<rank>`` and sleeps: a job to be killed at a known point, however fast it runs.
"""

from __future__ import annotations

import os

import torch

from urlkit.run import main

_tokenizer = None


def _poison(text: str) -> None:
    from urlkit.model.scoring import Reranker

    forward = Reranker.forward

    def poisoned(self, batch):
        logits = forward(self, batch)
        if not self.training:
            return logits
        from urlkit.model.backbone import load_smollm2_tokenizer

        global _tokenizer
        _tokenizer = _tokenizer or load_smollm2_tokenizer()
        prompts = _tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        hit = torch.tensor([text in prompt for prompt in prompts])
        poisoned = logits.clone()
        poisoned[hit] = float("nan")
        return poisoned

    Reranker.forward = poisoned


def _count_gradient_syncs(path: str) -> None:
    from lightning.pytorch.strategies import DDPStrategy
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    register = DDPStrategy._register_ddp_hooks

    def registered(self) -> None:
        register(self)
        strategy = self

        def counting(state, bucket):
            step = strategy.lightning_module.global_step
            with open(f"{path}.{strategy.global_rank}", "a") as f:
                f.write(f"{step} {bucket.index()}\n")
            return allreduce_hook(state, bucket)

        self.model.register_comm_hook(None, counting)

    DDPStrategy._register_ddp_hooks = registered


def _freeze_after(step: int, path: str) -> None:
    import time

    from urlkit.training.module import RerankerModule

    start = RerankerModule.on_train_batch_start

    def frozen(self, batch, batch_idx: int):
        if self.global_step == step:  # step's callbacks (history, checkpoint) have run
            with open(f"{path}.{self.global_rank}", "w") as f:
                f.write(str(step))
            time.sleep(3600)  # until the test kills the job
        return start(self, batch, batch_idx)

    RerankerModule.on_train_batch_start = frozen


if os.environ.get("URLKIT_TEST_FREEZE"):
    _step, _, _path = os.environ["URLKIT_TEST_FREEZE"].partition(":")
    _freeze_after(int(_step), _path)
if os.environ.get("URLKIT_TEST_POISON"):
    _poison(os.environ["URLKIT_TEST_POISON"])
if os.environ.get("URLKIT_TEST_SYNC_LOG"):
    _count_gradient_syncs(os.environ["URLKIT_TEST_SYNC_LOG"])

if __name__ == "__main__":
    main()
