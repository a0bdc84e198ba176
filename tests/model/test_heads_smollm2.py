"""The gathered-row head on the REAL SmolLM2-135M: same yes/no logits as the full LM head."""

from __future__ import annotations

import torch

from urlkit.model.heads import LMHeadRows, final_position, resolve_token_ids
from urlkit.model.scoring import Reranker

PROMPTS = [
    "Is the following document relevant to the query?\nQuery: river bank erosion\n"
    "Document: Floods wear away the banks of rivers. Answer yes or no.",
    "Query: bank interest rates\nDocument: The heron waited on the muddy bank. Relevant? yes or no.",
]


def test_gathered_rows_match_the_full_lm_head_on_smollm2(smollm2_backbone):
    tokenizer, model = smollm2_backbone.tokenizer, smollm2_backbone.model
    yes_no = resolve_token_ids(tokenizer, ["yes", "no"])
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum(), (
        "exercise left padding"
    )
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        full = output.logits[:, -1, yes_no]
        # hidden_states[-1] is after the final norm: exactly what the LM head multiplies
        head = LMHeadRows(model.get_output_embeddings().weight, yes_no)
        gathered = head(final_position(output.hidden_states[-1], batch["attention_mask"]))
        reranked = Reranker(smollm2_backbone, head)(batch)  # the one scoring path, end to end
    max_abs_diff = (gathered - full).abs().max().item()
    print(
        f"gathered vs full LM head, max abs diff: {max_abs_diff:.3g} (logits ~{full.abs().mean():.1f})"
    )
    assert max_abs_diff < 1e-4
    assert torch.allclose(reranked, full, atol=1e-4)
    assert full.abs().min() > 1.0, "real logits, not zeros"
