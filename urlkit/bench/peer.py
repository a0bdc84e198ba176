"""The peer: sentence-transformers' ``CrossEncoder`` on the same causal LM, pairs and batch sizes.

sentence-transformers (>= 5; 6.2 when this was written) scores a (query, document) pair with a
causal LM as ``Transformer(path, transformer_task="text-generation")`` followed by
``LogitScore(yes_id, no_id)``: the logit of "yes" minus that of "no" at the last position
(``logits_to_keep=1``: the LM head runs on the last position only), with its own prompt (the
model's chat template, the query and the document as ``query`` / ``document`` turns). It
trains with ``BinaryCrossEntropyLoss``. Here it gets the same backbone weights, the same LoRA
adapters (``urlkit.build.add_lora``, float32) and the same frozen-weight dtype as urlkit.

An optional extra: ``pip install "sentence-transformers>=5"`` (the ``bench`` extra).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


def available() -> str | None:
    """The installed sentence-transformers version, or None."""
    try:
        import sentence_transformers
    except ImportError:
        return None
    return sentence_transformers.__version__


class Peer:
    """A ``CrossEncoder`` with LoRA, scoring and training on text pairs."""

    def __init__(self, model_dir: str | Path, dtype: torch.dtype, device: torch.device, max_length: int,
                 lora_cfg, lr: float = 1e-4):
        from sentence_transformers import CrossEncoder
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
        from sentence_transformers.cross_encoder.modules import LogitScore

        from urlkit.build import add_lora

        transformer = Transformer(str(model_dir), transformer_task="text-generation", max_seq_length=max_length,
                                  model_kwargs={"dtype": dtype})
        tokenizer = transformer.tokenizer
        if tokenizer.pad_token is None:  # sentence-transformers before 6.2 pads a causal LM's batches
            tokenizer.pad_token = tokenizer.eos_token  # only with a pad token set (6.2 sets one itself)
        score = LogitScore(tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no"))
        self.model = CrossEncoder(modules=[transformer, score], device=str(device))
        add_lora(transformer.model, lora_cfg)
        for parameter in self.model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        self.model.to(device)
        self.loss = BinaryCrossEntropyLoss(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=lr)
        self.trainable = trainable

    def score(self, pairs: list[tuple[str, str]], batch_size: int):
        """``CrossEncoder.predict``: length-sorted batches under ``inference_mode``."""
        return self.model.predict(pairs, batch_size=batch_size, show_progress_bar=False, convert_to_tensor=True)

    def train_step(self, pairs: list[tuple[str, str]], labels: torch.Tensor) -> float:
        """One optimizer step of BinaryCrossEntropyLoss on ``pairs`` (one batch), with the
        gradient clipping urlkit's step does."""
        self.model.train()
        queries, documents = zip(*pairs, strict=True)
        loss = self.loss([list(queries), list(documents)], labels.to(self.model.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def attention_masks(self, pairs: list[tuple[str, str]], batch_size: int) -> list[torch.Tensor]:
        """The attention masks of the batches ``score`` runs (to count its tokens and padding)."""
        lengths = [len(self.model.preprocess([pair])["input_ids"][0]) for pair in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
        return [self.model.preprocess([pairs[i] for i in order[s : s + batch_size]])["attention_mask"]
                for s in range(0, len(pairs), batch_size)]


def model_folder(cfg, stack) -> Path:
    """A transformers folder holding the config's backbone: the converted GGUF cache for the
    embedded default, else the backbone saved once to a temporary folder (kept in ``stack``)."""
    from urlkit.model.backbone import load_backbone
    from urlkit.model.gguf_cache import converted_model

    if cfg.model.get("source") == "gguf":
        gguf = cfg.model.get("gguf_file")
        return Path(converted_model(Path(gguf) if gguf else None))
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="urlkit-bench-peer-")))
    backbone = load_backbone(cfg.model)
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    return folder
