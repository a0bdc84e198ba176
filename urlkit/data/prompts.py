"""Instruction-aware yes/no prompts in a configurable format (``prompt=`` in Hydra, conf/prompt/).

A format (:class:`PromptFormat`) is a system turn, a user-turn template with ``{instruction}``,
``{query}`` and ``{document}``, a default instruction, its answer tokens and the chat template
that writes the turns (null: the backbone's own). ``prompt=urlkit`` (default):

    <system>     Judge whether the document meets ... Answer only "yes" or "no".
    <user>       Instruction: {instruction}
                 Query: {query}
                 Document: {document}
                 Is the document relevant to the query? Answer yes or no.
    <assistant>  |  <- the prompt ends here (add_generation_prompt=True); the reranker
                      reads the "yes"/"no" logits at the next token.

``prompt=urlkit_document_last`` asks the same question before the document, so a query's
candidates share all but their document (faster, a little less accurate: its config says by
how much). ``prompt=qwen3_reranker`` is Qwen3-Reranker's official string, character for character
(its own ChatML template, the assistant turn opened with an empty think block), and
``prompt=qwen3_vl_reranker`` Qwen3-VL-Reranker's (images right after "<Query>:" and
"<Document>:"). An empty instruction becomes the format's ``default_instruction``; when that is
empty too, the template line holding ``{instruction}`` is dropped (a ConfigError where that line
also holds the query or the document, which would go with it).

Truncation shortens the DOCUMENT ONLY. The template is rendered once per query with a
sentinel in place of the document and split there into a prefix (system turn, instruction,
query, "Document: ") and a suffix (the question and the opened assistant turn). Prefix,
document and suffix are tokenised separately and the document ids are cut to

    budget = max_length - len(prefix ids) - len(suffix ids)

so the instruction, the query and the answer position always survive. A query whose prefix
and suffix leave no room for a single document token raises a :class:`DataError` naming it
(we never cut the query silently: raise ``max_length`` or shorten the data).
:meth:`PromptRenderer.validate` checks a whole split up front so this fails before training.

Tokenised prefixes are cached per (instruction, query) and documents per document (its id
and contents), so the tokeniser runs once per text across epochs; an image is tokenised again
when its file changed (``images.image_version``).

Images (vision-language backbones: pass the backbone's ``processor``). A query or document
image is placed at the start of its field, in the template's order (instruction, query,
document), as the processor's chat template writes an image item, e.g. for Qwen2.5-VL

    Query: <|vision_start|><|image_pad|> x n<|vision_end|>grinning face

where n = t * h * w / merge**2 is the image's token count from the processor's image
processor (its ``image_grid_thw``; 56 x 56 pixels -> 4 tokens). Image tokens are never cut:
the budget of the document's *text* is ``max_length`` minus the prefix (with any query
image), the suffix and the document's image tokens. An image that does not fit raises a
:class:`DataError`; an unreadable one raises a DataError naming the file. ``collate`` adds
``pixel_values`` (all images of the batch, in token order: row by row, query before
document), ``image_grid_thw`` (n_images, 3) and ``mm_token_type_ids`` (1 at image tokens,
which Qwen2.5-VL needs to give image tokens their 3-D rotary positions). Without a
processor, a query or document with an image raises a clear error.

Kept in one file (about 430 lines; the formats are in ``prompt_formats``, the pixels in
``images``): the renderer, its export form (``pair_chat_template``) and its image tokens share one
tokenisation contract (the prompt ends where the score is read; truncation cuts only the
document), which reads and is checked best in one place.
"""

from __future__ import annotations

import dataclasses
import string
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from urlkit.data.format import DataError, Document, Query, Split
from urlkit.data.images import ImageInputs, Version, image_version, read_image  # noqa: F401 (read_image re-exported)
from urlkit.data.prompt_formats import DEFAULT_SYSTEM_PROMPT, DEFAULT_TEMPLATE, PromptFormat  # noqa: F401 (re-exported)
from urlkit.errors import ConfigError

_FIELDS = {"instruction", "query", "document"}
_SENTINEL = "\u27e6urlkit-document-3f9c\u27e7"
_QUERY_IMAGE = "\u27e6urlkit-query-image-3f9c\u27e7"
_QUERY_TEXT = "\u27e6urlkit-query-3f9c\u27e7"
_INSTRUCTION = "\u27e6urlkit-instruction-3f9c\u27e7"


@dataclass(frozen=True)
class Encoded:
    """One tokenised prompt. ``images``: its image paths, in the order of their tokens."""

    input_ids: list[int]
    images: tuple[str, ...] = ()
    truncated: bool = False  # True when the document was cut to fit max_length


def document_lead(template: str) -> str:
    """The spaces right before ``{document}``: tokenised with the document (" word" is one BPE
    token, " " + "word" two), as they would be in one untruncated string, wherever a prompt is
    cut at the document (the renderer, the exported folder's recipe)."""
    before = template.split("{document}")[0]
    return before[len(before.rstrip(" ")):]


class PromptRenderer:
    """Render (instruction, query, document) into token ids and collate left-padded batches.

    ``template`` is a ``str.format`` string with ``{query}``, ``{document}`` and optionally
    ``{instruction}``; when the instruction is empty, the template line holding it is
    dropped. ``system_prompt`` is the system turn (merged into the user turn for chat
    templates that reject a system role).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int = 512,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        template: str = DEFAULT_TEMPLATE,
        processor: Any = None,
        document_cache_size: int = 200_000,
        image_cache_size: int = 1024,
        default_instruction: str = "",
        chat_template: str | None = None,
    ):
        self.default_instruction = default_instruction
        self.chat_template = chat_template  # None: the tokenizer's (processor's) own
        if chat_template:
            _check_parses(chat_template)
        if not chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the tokenizer has no chat template; the prompt needs one to "
                             "open the assistant turn (use an instruction-tuned backbone)")
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if not {"query", "document"} <= names <= _FIELDS or template.count("{document}") != 1:
            raise ConfigError(
                f"the prompt template needs {{query}} and exactly one {{document}}, may have "
                f"{{instruction}}, and nothing else; got fields {sorted(names)}"
            )
        self.tokenizer = tokenizer
        self.processor = processor
        self._images = None if processor is None else ImageInputs(processor, image_cache_size)
        self._image_marker = None if processor is None else self._image_item_text()
        self._query_first = template.index("{query}") < template.index("{document}")
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.template = template
        # An empty instruction drops the lines holding {instruction}; a line that also holds the
        # query or the document cannot be dropped (Qwen3-VL's "<Instruct>: {instruction}<Query>:
        # {query}" is one line), so such a template needs an instruction (_chat_text says so).
        dropped = [line for line in template.split("\n") if "{instruction}" in line]
        self._instruction_line_holds = next((line for line in dropped if "{query}" in line or "{document}" in line), None)
        self._template_without_instruction = "\n".join(
            line for line in template.split("\n") if "{instruction}" not in line
        )
        self._document_lead = document_lead(template)
        # Both caches keep the image_version of the picture they tokenised (its token count).
        self._prefixes: dict[tuple[str, str, str, str | None], tuple[Version | None, tuple[list[int], list[int]]]] = {}
        # Keyed by the whole (frozen) Document: two datasets may reuse an id for different
        # documents (emoji_t2i's picture "1f600" is emoji_i2t's name "1f600").
        self._documents: OrderedDict[Document, tuple[Version | None, tuple[list[int], list[int]]]] = OrderedDict()
        self._document_cache_size = document_cache_size
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0

    def encode(self, instruction: str, query: Query, doc: Document) -> Encoded:
        """Token ids of the full prompt, the document's text cut to fit ``max_length``."""
        prefix, suffix = self._prefix_suffix(instruction, query)  # checks the query's image first
        self._check_backbone_reads(f"document {doc.id!r}", doc.image)
        image_ids, document = self._document_ids(doc)
        budget = self.max_length - len(prefix) - len(suffix) - len(image_ids)
        if budget < 0:
            raise DataError(
                f"document {doc.id!r}: its image takes {len(image_ids)} tokens and query "
                f"{query.id!r}'s prompt {len(prefix) + len(suffix)}, over max_length="
                f"{self.max_length}; images are never cut: raise max_length or lower the "
                "backbone's max_pixels", path=doc.image)
        images = tuple(path for path in (query.image, doc.image) if path is not None)
        return Encoded(input_ids=prefix + image_ids + document[:budget] + suffix,
                       images=images if self._query_first else images[::-1],
                       truncated=len(document) > budget)

    def render_text(self, instruction: str, query: Query, doc: Document) -> str:
        """The full prompt as a string, untruncated (to read what the model sees; an image
        is its chat-template item, with one image token)."""
        document = document_text(doc)
        if doc.image is not None and self._image_marker is not None:
            document = self._image_marker + document
        return self._chat_text(instruction, query).replace(_SENTINEL, document)

    def collate(self, encodings: list[Encoded]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` of shape (B, longest prompt), so
        the last position (-1) of every row is the prompt's last token."""
        if not encodings:
            raise ValueError("cannot collate an empty list of prompts")
        width = max(len(e.input_ids) for e in encodings)
        input_ids = torch.full((len(encodings), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, encoded in enumerate(encodings):
            length = len(encoded.input_ids)
            input_ids[row, width - length:] = torch.tensor(encoded.input_ids, dtype=torch.long)
            attention_mask[row, width - length:] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        images = [path for encoded in encodings for path in encoded.images]
        if images and self._images is not None:
            pixels, grids = zip(*(self._images.pixels(path) for path in images), strict=True)
            batch["pixel_values"] = torch.cat(pixels)
            batch["image_grid_thw"] = torch.cat(grids)
            batch["mm_token_type_ids"] = (input_ids == self._images.token_id).int()
        return batch

    def validate(self, split: Split) -> None:
        """Raise the DataError of the first query whose prompt cannot fit a document.

        Rendering every query's chat template up front took 11 s for wordsense's 32,681
        training queries, so a text query is first measured cheaply: the template's own tokens
        (once per instruction, with an empty query) plus its text's tokens (one batched
        tokenizer call). Only a query within ``_VALIDATE_MARGIN`` tokens of ``max_length`` by
        that measure (tokens may merge differently where the query meets the template), and
        every query with an image, is rendered exactly as ``encode`` renders it."""
        texts = [query for query in split.queries if query.image is None]
        lengths = dict(zip((id(q) for q in texts), self._token_counts([q.text for q in texts]), strict=True))
        template_tokens: dict[str, int] = {}
        for query in split.queries:
            instruction = split.instruction_for(query)
            if query.image is None:
                if instruction not in template_tokens:
                    prefix, suffix = self._chat_text(instruction, dataclasses.replace(query, text="")).split(_SENTINEL)
                    template_tokens[instruction] = len(self._tokenize(prefix)) + len(self._tokenize(suffix))
                if template_tokens[instruction] + lengths[id(query)] < self.max_length - _VALIDATE_MARGIN:
                    continue
            self._prefix_suffix(instruction, query)

    def _token_counts(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _check_backbone_reads(self, owner: str, image: str | None) -> None:
        """A DataError for an image on a text-only backbone (``validate`` renders queries before
        any ``encode``: an image query there read the missing processor's image token)."""
        if image is not None and self.processor is None:
            raise DataError(
                f"image on a text-only backbone: {owner} has an image ({image}); this "
                "renderer writes text prompts only (images need a vision-language backbone "
                "and the processor's prompt path)"
            )

    def _check_no_image_token(self, owner: str, text: str) -> None:
        """A DataError naming ``owner`` whose text holds the image token: the tokeniser reads it
        as a picture's place, and a batch with pictures failed in the model ("Image features and
        image tokens do not match", naming no query or document)."""
        if self._images is not None and self._images.token in text:
            raise DataError(f"{owner}: its text holds the image token {self._images.token!r}, which "
                            "the vision-language backbone reads as the place of a picture; remove it "
                            "from the data")

    def _prefix_suffix(self, instruction: str, query: Query) -> tuple[list[int], list[int]]:
        self._check_backbone_reads(f"query {query.id!r}", query.image)
        key = (instruction, query.id, query.text, query.image)
        version = image_version(query.image)  # a picture rewritten at its path is tokenised again
        if key not in self._prefixes or self._prefixes[key][0] != version:
            self._check_no_image_token(f"query {query.id!r}", f"{instruction}{query.text}")
            prefix, suffix = self._chat_text(instruction, query).split(_SENTINEL)
            prefix = prefix.removesuffix(self._document_lead)
            if query.image is not None:
                prefix, suffix = self._expand_query_image(prefix, suffix, query.image)
            ids = (self._tokenize(prefix), self._tokenize(suffix))
            fixed = len(ids[0]) + len(ids[1])
            if fixed >= self.max_length:
                raise DataError(
                    f"query {query.id!r}: system turn, instruction, query and answer suffix take "
                    f"{fixed} tokens, leaving no room for the document under max_length="
                    f"{self.max_length}; raise max_length or shorten the query/instruction"
                )
            self._prefixes[key] = (version, ids)
        return self._prefixes[key][1]

    def _document_ids(self, doc: Document) -> tuple[list[int], list[int]]:
        """(image ids, never cut; text ids, cut to the budget) of a document."""
        version = image_version(doc.image) if self._image_marker is not None else None
        cached = self._documents.get(doc)
        ids = cached[1] if cached is not None and cached[0] == version else None
        if ids is None:
            self._check_no_image_token(f"document {doc.id!r}", document_text(doc))
            # Text kept up to max_length tokens: no budget is ever larger.
            if doc.image is None or self._image_marker is None:
                ids = ([], self._tokenize(self._document_lead + document_text(doc))[: self.max_length])
            else:
                image = self._image_marker.replace(self._images.token, self._image_tokens(doc.image))
                ids = (self._tokenize(self._document_lead + image),
                       self._tokenize(document_text(doc))[: self.max_length])
            self._documents[doc] = (version, ids)
            self._documents.move_to_end(doc)
            if len(self._documents) > self._document_cache_size:
                self._documents.popitem(last=False)
        else:
            self._documents.move_to_end(doc)
        return ids

    @classmethod
    def from_format(cls, tokenizer: Any, prompt_format: PromptFormat, **kwargs: Any) -> PromptRenderer:
        """A renderer of ``prompt_format`` (``kwargs``: max_length, processor, cache sizes)."""
        return cls(tokenizer, system_prompt=prompt_format.system, template=prompt_format.template,
                   default_instruction=prompt_format.default_instruction,
                   chat_template=prompt_format.chat_template, **kwargs)

    def _chat_text(self, instruction: str, query: Query, query_text: str | None = None) -> str:
        instruction = instruction or self.default_instruction
        if not instruction and self._instruction_line_holds is not None:
            raise ConfigError(
                f"prompt.template: the line {self._instruction_line_holds!r} holds {{instruction}} "
                "and the query or document, so an empty instruction cannot drop it (the query or "
                "document would go with it); set prompt.default_instruction, give the data an "
                "instruction, or put {instruction} on a line of its own")
        template = self.template if instruction else self._template_without_instruction
        text = query.text if query_text is None else query_text
        query_field = text if query.image is None else _QUERY_IMAGE + text
        user = template.format(instruction=instruction, query=query_field, document=_SENTINEL)
        chat = {"chat_template": self.chat_template} if self.chat_template else {}
        if self.processor is not None and self.chat_template:
            # a format's own template (qwen3_reranker's ChatML) writes string contents: a list of
            # content items came out as its Python repr. The image goes in as the processor writes it
            user = user.replace(_QUERY_IMAGE, self._image_marker)
        elif self.processor is not None:  # content items: the processor's template writes the image item
            before, _, after = user.partition(_QUERY_IMAGE)
            items = [{"type": "text", "text": before}]
            if query.image is not None:
                items += [{"type": "image"}, {"type": "text", "text": after}]
            messages = [{"role": "system", "content": self.system_prompt},
                        {"role": "user", "content": items}]
            return self._checked(self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **chat))
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": user}]
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True, **chat)
        except Exception:  # some templates (e.g. Gemma's) reject a system turn
            merged = [{"role": "user", "content": f"{self.system_prompt}\n\n{user}"}]
            text = self.tokenizer.apply_chat_template(merged, tokenize=False,
                                                      add_generation_prompt=True, **chat)
        return self._checked(text)

    def answer_context(self) -> str:
        """The prompt's text after the document up to the answer (the opened assistant turn):
        the head's tokens are the ones the model writes after it (``resolve_token_ids``)."""
        query = Query(id="", text="query", qrels={})  # the query comes before the document
        return self._chat_text(self.default_instruction or "instruction", query).split(_SENTINEL)[1]

    def pair_chat_template(self, instruction: str) -> str:
        """A Jinja chat template that writes this renderer's prompt for a (query, document) pair
        given as messages with the roles ``query`` and ``document`` (how sentence-transformers'
        CrossEncoder passes a pair), with ``instruction`` unless a ``system`` message (its
        ``prompt=``) gives another; any other conversation goes to the tokenizer's own chat
        template. The text it writes is :meth:`render_text`'s, so the token ids are urlkit's
        wherever a tokeniser sees the whole string as urlkit sees its three pieces (tested).
        Text prompts only (an image pair needs the processor's path).
        """
        if self.processor is not None:
            raise ConfigError("a pair chat template is written for text backbones only; this "
                             "renderer has an image processor (vision-language backbone)")
        query = Query(id="query", qrels={})
        given = self._pieces(self._chat_text(_INSTRUCTION, query, _QUERY_TEXT))
        try:
            empty = self._pieces(self._chat_text("", query, _QUERY_TEXT))
        except ConfigError as err:  # no prompt without an instruction: an empty system message fails as here
            empty = "{{ raise_exception(" + _jinja_string(str(err)) + ") }}"
        own = self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, str) else ""
        return (
            "{%- macro urlkit_text(content) -%}{%- if content is string -%}{{ content }}{%- else -%}"
            "{%- for item in content -%}{%- if item['type'] == 'text' -%}{{ item['text'] }}"
            "{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}\n"
            "{%- set urlkit_roles = messages | map(attribute='role') | list -%}\n"
            "{%- if 'query' in urlkit_roles and 'document' in urlkit_roles -%}\n"
            "{%- set urlkit = namespace(instruction=" + _jinja_string(instruction) + ", query='', document='') -%}\n"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' -%}{%- set urlkit.instruction = urlkit_text(message['content']) -%}"
            "{%- elif message['role'] == 'query' -%}{%- set urlkit.query = urlkit_text(message['content']) -%}"
            "{%- elif message['role'] == 'document' -%}{%- set urlkit.document = urlkit_text(message['content']) -%}"
            "{%- endif -%}{%- endfor -%}\n"
            "{%- if urlkit.instruction -%}" + given + "{%- else -%}" + empty + "{%- endif -%}\n"
            "{%- else -%}" + own + "{%- endif -%}"
        )

    def _pieces(self, text: str) -> str:
        """Jinja for ``text`` with the sentinels replaced by the pair's fields."""
        fields = {_INSTRUCTION: "urlkit.instruction", _QUERY_TEXT: "urlkit.query",
                  _SENTINEL: "urlkit.document"}
        out, rest = [], text
        while rest:
            found = [(rest.find(s), s) for s in fields if rest.find(s) >= 0]
            if not found:
                out.append(_jinja_string(rest, expression=False))
                break
            at, sentinel = min(found)
            if at:
                out.append(_jinja_string(rest[:at], expression=False))
            out.append("{{ " + fields[sentinel] + " }}")
            rest = rest[at + len(sentinel):]
        return "".join(out)

    @staticmethod
    def _checked(text: str) -> str:
        if text.count(_SENTINEL) != 1:
            raise ConfigError("the chat template did not keep the user turn verbatim; "
                             "cannot locate the document in the rendered prompt")
        return text

    def _image_item_text(self) -> str:
        """What the processor's chat template writes for one image item (with one image
        token), found by rendering an image between two known texts."""
        items = [{"type": "text", "text": _SENTINEL}, {"type": "image"},
                 {"type": "text", "text": _QUERY_IMAGE}]
        text = self.processor.apply_chat_template([{"role": "user", "content": items}],
                                                  tokenize=False)
        marker = text.partition(_SENTINEL)[2].partition(_QUERY_IMAGE)[0]
        if marker.count(self._images.token) != 1:
            raise ConfigError(f"the processor's chat template writes an image item as {marker!r}, "
                             f"not with one image token {self._images.token!r}")
        return marker

    def _image_tokens(self, image: str) -> str:
        """The image token once per token of ``image``, as the processor expands it."""
        return self._images.token * self._images.n_tokens(image)

    def _expand_query_image(self, prefix: str, suffix: str, image: str) -> tuple[str, str]:
        token = self._images.token
        if prefix.count(token) + suffix.count(token) != 1:
            raise DataError(f"the prompt should hold the query's image token {token!r} exactly "
                            "once; it must not appear in the instruction, query or template text")
        expanded = self._image_tokens(image)
        return prefix.replace(token, expanded), suffix.replace(token, expanded)

    def _tokenize(self, text: str) -> list[int]:
        # The chat template already wrote any BOS/special tokens as text.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


_VALIDATE_MARGIN = 16  # tokens: see PromptRenderer.validate


def _check_parses(chat_template: str) -> None:
    """A ConfigError naming ``prompt.chat_template`` and the line where it does not parse (the
    chat-template call raised jinja's bare "unexpected '}'", naming neither)."""
    import jinja2

    try:  # the loop controls transformers' chat templates may use
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(chat_template)
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"prompt.chat_template is not a valid Jinja template: line {err.lineno}: "
                          f"{err.message}") from err

_JINJA_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _jinja_string(text: str, expression: bool = True) -> str:
    """``text`` as a Jinja string literal (``expression``) or as ``{{ literal }}`` output. Jinja
    reads a literal's backslash escapes as Python does."""
    literal = '"' + text.translate(_JINJA_ESCAPES) + '"'
    return literal if expression else "{{ " + literal + " }}"


def document_text(doc: Document) -> str:
    """Title, then text, on separate lines (the title survives truncation)."""
    return "\n".join(part for part in (doc.title, doc.text) if part)


_document_text = document_text  # the name other modules imported first
