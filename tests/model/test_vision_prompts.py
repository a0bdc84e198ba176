"""Image prompts: the real Qwen tokenizer + processor, the tiny Qwen2.5-VL, real emoji pictures."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from urlkit.data import DataError, Document, PromptRenderer, Query, load_split
from urlkit.model.backbone import load_backbone
from urlkit.model.heads import LMHeadRows, resolve_token_ids
from urlkit.model.scoring import Reranker
from urlkit.paths import REPO_ROOT

EMOJI = REPO_ROOT / "data" / "emoji"
IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653
INSTRUCTION = "Retrieve the emoji picture that matches the given name."


@pytest.fixture(scope="module")
def tiny():
    return load_backbone({"family": "qwen2_5_vl", "source": "tiny"})


@pytest.fixture(scope="module")
def renderer(tiny):
    return PromptRenderer(tiny.tokenizer, max_length=96, processor=tiny.processor)


@pytest.fixture(scope="module")
def t2i():
    return load_split(EMOJI / "t2i", "test")


@pytest.fixture(scope="module")
def i2t():
    return load_split(EMOJI / "i2t", "test")


def _reranker(tiny):
    head = LMHeadRows(tiny.model.get_output_embeddings().weight,
                      resolve_token_ids(tiny.tokenizer, ["yes", "no"]))
    return Reranker(tiny, head)


def _one_step(reranker, batch):
    """One AdamW step on a contrastive loss over the batch (positive first); returns the
    trainable tensors' state before the step so the caller can restore it."""
    params = [p for name, p in reranker.named_parameters() if "embed_tokens" not in name]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    logits = reranker(batch)
    torch.nn.functional.cross_entropy(logits[:, 0].unsqueeze(0), torch.tensor([0])).backward()
    optimizer.step()
    optimizer.zero_grad()
    return params, before


def test_one_image_query_and_a_mixed_group_score_and_learn(tiny, renderer, t2i, i2t):
    # ONE image query (I2T) against three names, and ONE text query (T2I) whose group mixes
    # a text-only document with two pictures: all six prompts in one batch.
    picture_query = i2t.queries[0]
    names = [i2t.corpus[d] for d in picture_query.candidates[:3]]
    name_query = t2i.queries[0]
    mixed = [Document(id="text-only", text="a yellow face with a big grin"),
             *(t2i.corpus[d] for d in name_query.candidates[:2])]
    encodings = ([renderer.encode(INSTRUCTION, picture_query, d) for d in names]
                 + [renderer.encode(INSTRUCTION, name_query, d) for d in mixed])
    batch = renderer.collate(encodings)
    assert [len(e.images) for e in encodings] == [1, 1, 1, 0, 1, 1]
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 5
    assert batch["pixel_values"].shape == (5 * 16, 1176)
    assert int(batch["mm_token_type_ids"].sum()) == int((batch["input_ids"] == IMAGE_PAD).sum()) == 20

    reranker = _reranker(tiny)
    with torch.no_grad():
        scores = reranker(batch)
        alone = torch.cat([reranker(renderer.collate([e])) for e in encodings])
    assert scores.shape == (6, 2) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, alone, atol=1e-4, rtol=1e-4)  # padding changes nothing

    reranker.train()
    params, before = _one_step(reranker, batch)
    reranker.eval()
    with torch.no_grad():
        after = reranker(batch)
    for param, value in zip(params, before, strict=True):
        param.data.copy_(value)  # the module-scoped model stays untrained for other tests
    assert not torch.allclose(after, scores)
    assert not torch.allclose(after[0], scores[0]) and not torch.allclose(after[4], scores[4])


def test_positions_of_image_tokens_come_from_mm_token_type_ids(tiny, renderer, i2t):
    query = i2t.queries[0]
    batch = renderer.collate([renderer.encode(INSTRUCTION, query, i2t.corpus[query.id])])
    decoder = tiny.model.model
    with torch.no_grad():
        three_d = decoder(**batch, use_cache=False).last_hidden_state[:, -1]
        flat = decoder(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"},
                       use_cache=False).last_hidden_state[:, -1]
        scored = _reranker(tiny).decoder(**batch, use_cache=False).last_hidden_state[:, -1]
    assert not torch.allclose(three_d, flat)  # without it Qwen2.5-VL falls back to 1-D positions
    torch.testing.assert_close(scored, three_d)


def test_images_sit_at_the_start_of_their_field_in_template_order(tiny, renderer, t2i, i2t):
    text = renderer.render_text(INSTRUCTION, i2t.queries[0], t2i.corpus[i2t.queries[0].id])
    image_item = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"Query: {image_item}\nDocument: {image_item}\nRelevant?" in text
    both = renderer.encode(INSTRUCTION, i2t.queries[0], t2i.corpus[i2t.queries[0].id])
    assert both.images == (i2t.queries[0].image, t2i.corpus[i2t.queries[0].id].image)
    ids = both.input_ids
    starts = [i for i, t in enumerate(ids) if t == VISION_START]
    assert len(starts) == 2 and all(ids[s + 1 : s + 5] == [IMAGE_PAD] * 4 for s in starts)
    assert all(ids[s + 5] == VISION_END for s in starts)


def test_truncation_cuts_the_document_text_never_its_image(tiny, renderer, t2i):
    query = t2i.queries[0]
    picture = t2i.corpus[query.positives[0]]
    long = Document(id="long", image=picture.image, text=" ".join(["grinning"] * 500))
    encoded = renderer.encode(INSTRUCTION, query, long)
    assert encoded.truncated and len(encoded.input_ids) == renderer.max_length
    assert encoded.input_ids.count(IMAGE_PAD) == 4 and VISION_END in encoded.input_ids
    suffix = tiny.tokenizer.encode("<|im_start|>assistant\n")
    assert encoded.input_ids[-len(suffix):] == suffix
    # " " + <|vision_start|> + 4 x <|image_pad|> + <|vision_end|>: 7 ids that fit whole or not at all
    fitting = len(renderer.encode(INSTRUCTION, query, picture).input_ids)
    tight = PromptRenderer(tiny.tokenizer, max_length=fitting - 3, processor=tiny.processor)
    with pytest.raises(DataError, match="document 'long': its image takes 7 tokens"):
        tight.encode(INSTRUCTION, query, long)


def test_text_prompts_are_the_same_with_or_without_the_processor(tiny, renderer):
    query = Query(id="q", text="grinning face", qrels={"d": 1})
    doc = Document(id="d", title="Smileys", text="a yellow face with a big grin")
    text_only = PromptRenderer(tiny.tokenizer, max_length=96)
    assert renderer.encode(INSTRUCTION, query, doc) == text_only.encode(INSTRUCTION, query, doc)
    assert set(renderer.collate([renderer.encode(INSTRUCTION, query, doc)])) == {
        "input_ids", "attention_mask"}


def test_an_unreadable_image_is_a_data_error_naming_the_file(renderer, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    query = Query(id="q", text="grinning face", qrels={"d": 1})
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        renderer.encode(INSTRUCTION, query, Document(id="d", image=str(broken)))



def test_the_image_token_in_a_text_is_a_data_error_naming_its_query_or_document(renderer, tmp_path):
    # read as a picture's place: a batch with pictures failed in the model, naming nothing
    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    query = Query(id="q", text="what pads pictures in Qwen-VL", qrels={"d": 1})
    mention = Document(id="d-mentions", text="Qwen2.5-VL writes <|image_pad|> once per image token.")
    with pytest.raises(DataError, match="document 'd-mentions': its text holds the image token"):
        renderer.encode(INSTRUCTION, query, mention)
    asking = Query(id="q-asks", text="what is <|image_pad|>", qrels={}, image=str(tmp_path / "red.png"))
    with pytest.raises(DataError, match="query 'q-asks': its text holds the image token"):
        renderer.encode(INSTRUCTION, asking, Document(id="d", text="a red square"))
    # the pictures' own tokens are the renderer's, not the text's
    batch = renderer.collate([renderer.encode(INSTRUCTION, query, Document(id="p", image=str(tmp_path / "red.png")))])
    assert int(batch["mm_token_type_ids"].sum()) == 4

def test_an_image_on_a_text_only_backbone_is_the_prompt_error(tiny, t2i):
    text_only = PromptRenderer(tiny.tokenizer)
    query = t2i.queries[0]
    with pytest.raises(DataError, match="image on a text-only backbone: document"):
        text_only.encode(INSTRUCTION, query, t2i.corpus[query.positives[0]])


def test_a_picture_rewritten_at_its_path_is_read_again(tiny, tmp_path):
    # A service writing each upload to one path: the caches kept by path scored the first
    # picture again. The query's picture changes (same size on screen); the document's grows
    # from 4 to 16 image tokens, so its cached prompt must be rebuilt too.
    upload, doc_picture = tmp_path / "upload.png", tmp_path / "doc.png"
    query = Query(id="q", image=str(upload), qrels={})
    docs = [Document(id="name", text="grinning face"), Document(id="pic", image=str(doc_picture))]
    reranker = _reranker(tiny)
    renderer = PromptRenderer(tiny.tokenizer, max_length=96, processor=tiny.processor)

    def scores(with_renderer):
        with torch.no_grad():
            return reranker(with_renderer.collate([with_renderer.encode(INSTRUCTION, query, d) for d in docs]))

    shutil.copy(EMOJI / "images" / "1f600.png", upload)
    shutil.copy(EMOJI / "images" / "2764-fe0f.png", doc_picture)
    first = scores(renderer)
    shutil.copy(EMOJI / "images" / "1f44d.png", upload)
    with Image.open(EMOJI / "images" / "1f004.png") as small:
        small.resize((112, 112)).save(doc_picture)
    second = scores(renderer)
    fresh = PromptRenderer(tiny.tokenizer, max_length=96, processor=tiny.processor)
    torch.testing.assert_close(second, scores(fresh), atol=0, rtol=0)
    assert not torch.allclose(second[0], first[0])  # the query's new picture, against the same name
    assert renderer.encode(INSTRUCTION, query, docs[1]).input_ids.count(IMAGE_PAD) == 4 + 16
