"""Shared fixtures (owned by the backbone/heads/scoring area; other areas may reuse them).

The GGUF conversion of SmolLM2 runs once per machine (about 30 s, cached under
``$URLKIT_CACHE/models``); afterwards these fixtures load in about a second.
"""

from __future__ import annotations

import pytest

from urlkit.model.backbone import load_backbone, load_smollm2_tokenizer


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's real tokenizer (vocab 49152, ChatML template), left-padded.
    Shared by the whole session: do not change its settings in a test."""
    return load_smollm2_tokenizer()


@pytest.fixture
def tiny_backbone():
    """A fresh, seeded, randomly initialised 2-layer Llama (hidden 64) with SmolLM2's real
    tokenizer; cheap, so each test gets its own copy and may train or wrap it with LoRA."""
    return load_backbone({"source": "tiny", "name": "tiny_llama", "seed": 0})


@pytest.fixture(scope="session")
def smollm2_backbone():
    """The real SmolLM2-135M-Instruct (float32), shared by the session: read it, never train
    it or wrap it with LoRA (build your own with ``load_backbone`` for that)."""
    return load_backbone({"source": "gguf", "name": "smollm2_135m"})
