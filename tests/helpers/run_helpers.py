"""A small real-text dataset and a Hydra composer for tests that run the training entry point."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from urlkit.config import register_resolvers
from urlkit.paths import REPO_ROOT

# Twelve topics, each a query and a relevant passage; the other passages are negatives.
TOPICS = [
    ("cats", "where do cats like to sleep", "Cats sleep in warm, sheltered places such as sunny windowsills."),
    ("dogs", "how to walk a dog", "Walk a dog on a short leash and reward it for staying close."),
    ("saws", "tool for cutting wood", "A hand saw cuts wood along a straight line with its toothed blade."),
    ("drills", "making holes in metal", "A power drill with a cobalt bit makes clean holes in steel and metal."),
    ("bread", "baking bread at home", "Knead the dough, let it rise for an hour, then bake the loaf until golden."),
    ("tea", "brewing green tea", "Steep green tea leaves in water just below boiling for two minutes."),
    ("rain", "why does it rain", "Rain falls when water vapour in clouds condenses into heavy droplets."),
    ("moon", "phases of the moon", "The moon's phases follow its position relative to the sun and the earth."),
    ("chess", "how the knight moves in chess", "In chess the knight moves in an L shape and can jump over pieces."),
    ("piano", "learning to play the piano", "Practise piano scales slowly every day to build finger strength."),
    ("bikes", "fixing a flat bicycle tyre", "Remove the wheel, patch the inner tube, and pump the tyre back up."),
    ("coffee", "grinding coffee beans", "Grind coffee beans just before brewing for the freshest flavour."),
]


def write_small_dataset(root: Path) -> Path:
    """A urlkit JSONL folder: 12 documents, train/dev/test queries (dev and test reuse topics)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for name, _, passage in TOPICS:
            f.write(json.dumps({"id": f"d-{name}", "text": passage}) + "\n")
    splits = {"train": TOPICS, "dev": TOPICS[:4], "test": TOPICS[4:10]}
    for split, topics in splits.items():
        with (root / f"{split}.jsonl").open("w") as f:
            for name, query, _ in topics:
                f.write(json.dumps({"id": f"{split}-{name}", "text": query, "positives": [f"d-{name}"]}) + "\n")
    (root / "dataset.json").write_text(
        json.dumps({"name": "small", "category": "T2T", "instruction": "Find the passage that answers the query."})
    )
    return root


def first_documents_ranking(split, k: int) -> dict[str, list[tuple[str, float]]]:
    """Every query of ``split`` with the corpus's first ``k`` documents as its candidates: ``k``
    pairs a query whatever their words (BM25 retrieves only documents sharing a term with the
    query, none for some of the small dataset's)."""
    return {q.id: [(d, 0.0) for d in list(split.corpus)[:k]] for q in split.queries}


def compose_train(data_path: Path, *overrides: str, config_name: str = "train"):
    """The training config as ``python -m urlkit.run`` composes it, with tiny settings."""
    register_resolvers()
    tiny = [
        "model=tiny",
        *([f"data.path={data_path}"] if "data=" not in " ".join(overrides) else []),
        "logger=none",
        "train.max_steps=3",
        "train.warmup_steps=1",
        "eval.every_n_steps=0",
        "eval.batch_size=8",
        "checkpoint.every_n_steps=2",
        "data.n_negatives=3",
        "+trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=[*tiny, *overrides])


def tiny_gemma2_folder(root: Path, softcap: float = 3.0) -> Path:
    """A tiny random Gemma-2 (final_logit_softcapping set, as Gemma 2's checkpoints have it) with
    SmolLM2's tokenizer, saved as a local checkpoint folder for ``model.source=hub``."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from urlkit.model.backbone import load_smollm2_tokenizer

    tokenizer = load_smollm2_tokenizer()
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=softcap,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma2ForCausalLM(config)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
