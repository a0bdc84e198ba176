"""``python -m helpers.instrumented_run <urlkit.run arguments>``: urlkit.run with test
instruments installed in every process of the job (Lightning's launcher starts each rank with
this same module), for the multi-process tests of tests/training/test_distributed.py.

* ``URLKIT_TEST_POISON=<text>``: the training scores of prompts containing ``text`` are NaN.
* ``URLKIT_TEST_SYNC_LOG=<path>``: every gradient bucket DDP all-reduces appends a line
  ``<global step> <bucket index>`` to ``<path>.<rank>`` (a DDP communication hook wrapping
  the default all-reduce), to count the gradient synchronisations of each step.
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


if os.environ.get("URLKIT_TEST_POISON"):
    _poison(os.environ["URLKIT_TEST_POISON"])
if os.environ.get("URLKIT_TEST_SYNC_LOG"):
    _count_gradient_syncs(os.environ["URLKIT_TEST_SYNC_LOG"])

if __name__ == "__main__":
    main()
