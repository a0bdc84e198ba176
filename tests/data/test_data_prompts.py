"""Prompts with SmolLM2's real tokenizer: chat template, document-only truncation, collate."""

from __future__ import annotations

import pytest
import torch
from helpers.data_builders import smollm2_tokenizer

from urlkit.data import DataError, Document, PromptRenderer, Query, Split

ANSWER_SUFFIX = "Relevant?<|im_end|>\n<|im_start|>assistant\n"
INSTRUCTION = "Find the passage that answers the question."
QUERY = Query(id="q1", text="Where do cats like to sleep?", qrels={"d1": 1})
SHORT = Document(id="d1", title="Cats", text="The cat sat on the warm mat and purred.")
LONG = Document(id="d2", text=" ".join(f"word{i}" for i in range(3000)))


@pytest.fixture(scope="session")
def tokenizer():
    return smollm2_tokenizer()


class CountingTokenizer:
    """The real tokenizer, counting how often it tokenises."""

    def __init__(self, tokenizer):
        self._tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_prompt_is_the_chat_template_with_system_instruction_query_document(tokenizer):
    renderer = PromptRenderer(tokenizer, max_length=512)
    text = renderer.render_text(INSTRUCTION, QUERY, SHORT)
    assert text.startswith('<|im_start|>system\nJudge whether')
    assert f"<|im_start|>user\nInstruction: {INSTRUCTION}\nQuery: {QUERY.text}\n" in text
    assert "Document: Cats\nThe cat sat on the warm mat and purred.\n" in text
    assert text.endswith(ANSWER_SUFFIX)
    encoded = renderer.encode(INSTRUCTION, QUERY, SHORT)
    # Splitting at the document does not change the tokens of an untruncated prompt.
    assert encoded.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert not encoded.truncated and encoded.images == ()


def test_truncation_cuts_only_the_document(tokenizer):
    renderer = PromptRenderer(tokenizer, max_length=96)
    encoded = renderer.encode(INSTRUCTION, QUERY, LONG)
    assert len(encoded.input_ids) == 96 and encoded.truncated
    text = tokenizer.decode(encoded.input_ids)
    assert text.endswith("\n" + ANSWER_SUFFIX)  # the answer position survives
    assert f"Instruction: {INSTRUCTION}\nQuery: {QUERY.text}\nDocument: word0 word1" in text
    kept = text.split("Document: ")[1].split("\n")[0]
    assert LONG.text.startswith(kept.rsplit(" ", 1)[0]) and len(kept) < len(LONG.text) // 10
    full = PromptRenderer(tokenizer, max_length=100_000).encode(INSTRUCTION, QUERY, LONG)
    assert len(full.input_ids) > 3000 and not full.truncated


def test_empty_instruction_drops_its_line_and_custom_templates_work(tokenizer):
    text = PromptRenderer(tokenizer).render_text("", QUERY, SHORT)
    assert "Instruction" not in text and f"<|im_start|>user\nQuery: {QUERY.text}\n" in text
    custom = PromptRenderer(tokenizer, system_prompt="Say yes or no.",
                            template="Q: {query}\nD: {document}\nRelevant?")
    text = custom.render_text(INSTRUCTION, QUERY, SHORT)
    assert "system\nSay yes or no.<|im_end|>" in text and INSTRUCTION not in text
    assert text.endswith("Relevant?<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="exactly one \\{document\\}"):
        PromptRenderer(tokenizer, template="{query} {document} {document}")
    with pytest.raises(ValueError, match="nothing else"):
        PromptRenderer(tokenizer, template="{query} {document} {title}")


def test_an_empty_instruction_never_drops_the_query_with_its_line(tokenizer):
    """Qwen3-VL-Reranker's template holds instruction and query on one line: without any
    instruction (default included) dropping that line would drop the query, so it is an error."""
    from urlkit.errors import ConfigError

    template = "<Instruct>: {instruction}<Query>:{query}\n<Document>:{document}"
    renderer = PromptRenderer(tokenizer, template=template)
    with pytest.raises(ConfigError, match="prompt.template.*<Instruct>: \\{instruction\\}<Query>:\\{query\\}.*default_instruction"):
        renderer.encode("", QUERY, SHORT)
    assert f"<Instruct>: {INSTRUCTION}<Query>:{QUERY.text}\n" in renderer.render_text(INSTRUCTION, QUERY, SHORT)
    defaulted = PromptRenderer(tokenizer, template=template, default_instruction="Find it.")
    assert f"<Instruct>: Find it.<Query>:{QUERY.text}\n" in defaulted.render_text("", QUERY, SHORT)
    # exported: the pair template writes the prompt with an instruction, and fails without one
    tokenizer.chat_template, own = renderer.pair_chat_template(INSTRUCTION), tokenizer.chat_template
    try:
        pair = [{"role": "query", "content": QUERY.text}, {"role": "document", "content": "d"}]
        assert f"<Query>:{QUERY.text}" in tokenizer.apply_chat_template(pair, tokenize=False)
        with pytest.raises(Exception, match="default_instruction"):
            tokenizer.apply_chat_template([{"role": "system", "content": ""}, *pair], tokenize=False)
    finally:
        tokenizer.chat_template = own


def test_a_query_too_long_for_max_length_is_a_data_error_naming_it(tokenizer):
    long_query = Query(id="q-long", text="why " * 200, qrels={"d1": 1})
    renderer = PromptRenderer(tokenizer, max_length=128)
    with pytest.raises(DataError, match="query 'q-long'.*no room for the document.*max_length=128"):
        renderer.encode("", long_query, SHORT)
    split = Split(name="toy", split="train", category="T2T", instruction="",
                  corpus={"d1": SHORT}, queries=[QUERY, long_query])
    with pytest.raises(DataError, match="q-long"):
        renderer.validate(split)


def test_validate_measures_cheaply_but_decides_exactly(tokenizer):
    """validate() counts a query's tokens apart from the template's; that count must stay
    well within the margin of the rendered prompt's, and a query near max_length is decided
    by rendering it exactly (one document token left passes, none fails)."""
    from urlkit.data.prompts import _SENTINEL, _VALIDATE_MARGIN

    renderer = PromptRenderer(tokenizer, max_length=512)
    template = sum(len(renderer._tokenize(part)) for part in
                   renderer._chat_text("Find it.", Query(id="e", text="", qrels={})).split(_SENTINEL))
    texts = ["where do cats sleep", "  leading spaces", "trailing space ", "naïve café — ünïcode ✓",
             "new\nline", "<|im_end|> looks special", "x" * 300, "?!.,;:", "don't", "1234567890 " * 20]
    for i, text in enumerate(texts):
        exact = sum(map(len, renderer._prefix_suffix("Find it.", Query(id=f"q{i}", text=text, qrels={}))))
        assert abs(template + renderer._token_counts([text])[0] - exact) <= _VALIDATE_MARGIN // 2, text
    filler = "cat " * 40
    fixed = sum(map(len, renderer._prefix_suffix("", Query(id="f", text=filler, qrels={}))))
    split = Split(name="toy", split="train", category="T2T", instruction="", corpus={"d1": SHORT},
                  queries=[QUERY, Query(id="q-edge", text=filler, qrels={"d1": 1})])
    PromptRenderer(tokenizer, max_length=fixed + 1).validate(split)  # one token left for a document
    with pytest.raises(DataError, match="q-edge"):
        PromptRenderer(tokenizer, max_length=fixed).validate(split)


def test_images_are_refused_by_a_text_only_renderer(tokenizer, tmp_path):
    renderer = PromptRenderer(tokenizer)
    with pytest.raises(DataError, match="image on a text-only backbone: document 'd3'"):
        renderer.encode("", QUERY, Document(id="d3", image=str(tmp_path / "x.png")))
    with pytest.raises(DataError, match="image on a text-only backbone: query 'q2'"):
        renderer.encode("", Query(id="q2", image="/x.png", qrels={"d1": 1}), SHORT)
    image_query = Split(name="s", split="test", category="I2T", instruction="", corpus={"d1": SHORT},
                        queries=[Query(id="q3", image="/x.png", qrels={"d1": 1})])
    with pytest.raises(DataError, match="image on a text-only backbone: query 'q3'"):
        renderer.validate(image_query)  # up front, before any encode


def test_collate_left_pads_so_the_last_position_is_every_prompts_last_token(tokenizer):
    renderer = PromptRenderer(tokenizer, max_length=100)
    encodings = [renderer.encode(INSTRUCTION, QUERY, doc) for doc in (SHORT, LONG)]
    batch = renderer.collate(encodings)
    lengths = [len(e.input_ids) for e in encodings]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    for row, encoded in enumerate(encodings):
        assert batch["input_ids"][row, -lengths[row]:].tolist() == encoded.input_ids
        assert batch["attention_mask"][row, : max(lengths) - lengths[row]].sum() == 0
    assert torch.equal(batch["input_ids"][:, -1], torch.tensor([e.input_ids[-1] for e in encodings]))
    assert (batch["input_ids"][0, : max(lengths) - lengths[0]] == tokenizer.pad_token_id).all()
    with pytest.raises(ValueError, match="empty"):
        renderer.collate([])


def test_tokenisation_is_cached_per_query_and_per_document(tokenizer):
    counting = CountingTokenizer(tokenizer)
    renderer = PromptRenderer(counting, max_length=128)
    first = renderer.encode(INSTRUCTION, QUERY, SHORT)
    assert counting.calls == 3  # prefix, suffix, document
    assert renderer.encode(INSTRUCTION, QUERY, SHORT) == first and counting.calls == 3
    renderer.encode(INSTRUCTION, QUERY, LONG)
    assert counting.calls == 4  # only the new document
    renderer.encode("", QUERY, LONG)
    assert counting.calls == 6  # a new (instruction, query) prefix and suffix
