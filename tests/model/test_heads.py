"""Scoring heads: label tokens, gathered LM-head rows, the random projection, expanded token sets."""

from __future__ import annotations

import pytest
import torch

from urlkit.model.heads import (
    LMHeadRows,
    RandomProjection,
    build_head,
    final_position,
    resolve_token_ids,
    top_tokens_by_mean_logit,
)


def test_yes_and_no_are_single_tokens_as_they_follow_the_assistant_turn(smollm2_tokenizer):
    yes, no = resolve_token_ids(smollm2_tokenizer, ["yes", "no"])
    assert yes != no
    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is the sky blue?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = smollm2_tokenizer(prompt)["input_ids"]
    for label, token in (("yes", yes), ("no", no)):
        # the label encoded alone is exactly the token the model emits after "assistant\n"
        assert smollm2_tokenizer(prompt + label)["input_ids"] == prompt_ids + [token]
    # ... and not the mid-sentence form with a leading space
    assert yes != smollm2_tokenizer.encode(" yes", add_special_tokens=False)[0]


def test_a_multi_token_label_is_an_error_naming_it(smollm2_tokenizer):
    with pytest.raises(ValueError, match="'irrelevantly-so'") as caught:
        resolve_token_ids(smollm2_tokenizer, ["yes", "irrelevantly-so"])
    assert "tokenises to" in str(caught.value)
    with pytest.raises(ValueError, match="repeated"):
        resolve_token_ids(smollm2_tokenizer, ["yes", "yes"])


def test_frozen_rows_equal_the_lm_head_and_get_no_gradient():
    torch.manual_seed(0)
    weight = torch.randn(50, 8, requires_grad=True)
    head = LMHeadRows(weight, [7, 3])
    hidden = torch.randn(4, 8, requires_grad=True)
    scores = head(hidden)
    assert torch.allclose(scores, (hidden @ weight.T)[:, [7, 3]])
    assert list(head.parameters()) == [] and not head.rows.requires_grad
    scores.sum().backward()
    assert weight.grad is None, "a frozen head must not route gradient to the LM head"
    assert hidden.grad is not None, "the backbone (LoRA) still gets its gradient"


def test_trainable_rows_are_a_separate_parameter_and_the_tied_embedding_stays_put(tiny_backbone):
    model = tiny_backbone.model
    embedding = model.get_input_embeddings().weight
    before = embedding.detach().clone()
    head = build_head("lm_head", model, [10407, 4607], trainable=True)
    assert [name for name, _ in head.named_parameters()] == ["rows"]
    assert head.rows.data_ptr() != embedding.data_ptr()
    assert torch.equal(head.rows.detach(), before[[10407, 4607]])

    optimizer = torch.optim.SGD(head.parameters(), lr=1.0)
    head(torch.randn(3, model.config.hidden_size)).sum().backward()
    optimizer.step()
    assert not torch.equal(head.rows.detach(), before[[10407, 4607]])
    assert torch.equal(embedding.detach(), before), "training the rows must not touch the embedding"


def test_bias_rows_are_gathered_too():
    weight, bias = torch.randn(20, 6), torch.randn(20)
    hidden = torch.randn(2, 6)
    head = LMHeadRows(weight, [4, 9], bias=bias)
    assert torch.allclose(head(hidden), (hidden @ weight.T + bias)[:, [4, 9]])


def test_random_projection_is_seeded_and_scaled_like_the_rows_it_replaces(tiny_backbone):
    model = tiny_backbone.model
    first = build_head("rand", model, [10407, 4607], seed=5)
    again = build_head("rand", model, [10407, 4607], seed=5)
    other = build_head("rand", model, [10407, 4607], seed=6)
    assert isinstance(first, RandomProjection) and first.weight.requires_grad
    assert torch.equal(first.weight, again.weight) and not torch.equal(first.weight, other.weight)
    lm_rows = model.get_output_embeddings().weight.detach()[[10407, 4607]]
    assert torch.allclose(first.weight.norm(dim=1), lm_rows.norm(dim=1).mean().expand(2), rtol=1e-5)
    # a random direction, not the LM head's
    assert not torch.allclose(first.weight.detach(), lm_rows, atol=1e-3)
    assert RandomProjection(64, 3, seed=1)(torch.randn(5, 64)).shape == (5, 3)


def test_unknown_head_kind_and_bad_token_ids_are_errors(tiny_backbone):
    with pytest.raises(ValueError, match="'linear'"):
        build_head("linear", tiny_backbone.model, [1, 2])
    with pytest.raises(ValueError, match="within"):
        LMHeadRows(torch.randn(10, 4), [3, 10])


def test_final_position_reads_the_last_real_token_of_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert final_position(hidden, left).flatten().tolist() == [3.0, 7.0]
    assert final_position(hidden, right).flatten().tolist() == [1.0, 7.0]
    with pytest.raises(ValueError, match="no tokens"):
        final_position(hidden, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))


def test_top_tokens_start_with_yes_no_then_follow_the_mean_logit(tiny_backbone):
    tokenizer, model = tiny_backbone.tokenizer, tiny_backbone.model
    yes_no = resolve_token_ids(tokenizer, ["yes", "no"])
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in (
            "Is a cat a mammal?",
            "Query: bank. Document: a river bank.",
            "hello",
            "Relevant?",
        )
    ]
    batches = [
        tokenizer(prompts[:2], return_tensors="pt", padding=True),
        tokenizer(prompts[2:], return_tensors="pt", padding=True),
    ]
    chosen = top_tokens_by_mean_logit(model, batches, k=6, leading=yes_no)
    assert len(chosen) == 6 == len(set(chosen)) and chosen[:2] == yes_no

    with torch.no_grad():  # the reference: full-vocabulary logits at the last position
        mean = torch.cat([model(**batch).logits[:, -1] for batch in batches]).mean(0)
    expected = [t for t in mean.argsort(descending=True).tolist() if t not in yes_no][:4]
    assert chosen[2:] == expected
    with pytest.raises(ValueError, match="smaller"):
        top_tokens_by_mean_logit(model, batches, k=1, leading=yes_no)


def sentencepiece_tokenizer(with_bare_words: bool):
    """A tiny SentencePiece-style tokenizer (Unigram, "▁" word starts) with a ChatML template,
    built here: "yes" alone encodes as "▁yes"; after "assistant\\n" (no space: no "▁") it is
    "yes" where the vocabulary has that piece (``with_bare_words``), else its letters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "</s>", "<|im_start|>", "<|im_end|>", "▁", "\n", "▁yes", "▁no", "▁assistant",
              "▁system", "▁user", *"abcdefghijklmnopqrstuvwxyz:", *(["yes", "no"] if with_bare_words else [])]
    model = models.Unigram([(p, -1.0 if len(p) > 1 else -5.0) for p in pieces], unk_id=0, byte_fallback=False)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="</s>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def test_a_sentencepiece_label_is_the_token_the_model_writes_after_the_prompt():
    """Encoded alone, "yes" is "▁yes" (a word start); after the prompt's "assistant\\n" the model
    writes "yes": the head reads that row (the label alone read "▁yes", a row the model does
    not write there). A word the model writes in several pieces there is an error naming them."""
    from urlkit.data.prompts import PromptRenderer

    tokenizer = sentencepiece_tokenizer(with_bare_words=True)
    context = PromptRenderer(tokenizer, max_length=64).answer_context()
    assert context.endswith("<|im_start|>assistant\n")
    alone = resolve_token_ids(tokenizer, ["yes", "no"])
    assert tokenizer.convert_ids_to_tokens(alone) == ["▁yes", "▁no"]
    ids = resolve_token_ids(tokenizer, ["yes", "no"], context)
    assert tokenizer.convert_ids_to_tokens(ids) == ["yes", "no"]
    prompt = tokenizer.encode(context, add_special_tokens=False)
    assert tokenizer.encode(context + "yes", add_special_tokens=False) == [*prompt, ids[0]]

    letters = sentencepiece_tokenizer(with_bare_words=False)
    with pytest.raises(ValueError, match=r"'yes' is not a single token after the prompt") as caught:
        resolve_token_ids(letters, ["yes", "no"], PromptRenderer(letters, max_length=64).answer_context())
    assert "['y', 'e', 's']" in str(caught.value)
