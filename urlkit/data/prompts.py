"""Instruction-aware yes/no prompts, rendered with the backbone's own chat template.

    <system>     Answer only "yes" or "no".
    <user>       Instruction: {instruction}
                 Query: {query}
                 Document: {document}
                 Is the document relevant to the query? Answer yes or no.
    <assistant>  |  <- the prompt ends here (add_generation_prompt=True); the reranker
                      reads the "yes"/"no" logits at the next token.

Truncation shortens the DOCUMENT ONLY. The template is rendered once per query with a
sentinel in place of the document and split there into a prefix (system turn, instruction,
query, "Document: ") and a suffix (the question and the opened assistant turn). Prefix,
document and suffix are tokenised separately and the document ids are cut to

    budget = max_length - len(prefix ids) - len(suffix ids)

so the instruction, the query and the answer position always survive. A query whose prefix
and suffix leave no room for a single document token raises a :class:`DataError` naming it
(we never cut the query silently: raise ``max_length`` or shorten the data).
:meth:`PromptRenderer.validate` checks a whole split up front so this fails before training.

Tokenised prefixes are cached per (instruction, query) and documents per doc id, so the
tokeniser runs once per text across epochs.

Images: an :class:`Encoded` can carry image paths for a vision-language processor, and the
renderer accepts the backbone's ``processor`` (kept as ``self.processor`` for the
vision-language prompt path), but it renders text only: a query or document with an image
raises a clear error.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from urlkit.data.format import DataError, Document, Query, Split

DEFAULT_SYSTEM_PROMPT = (
    "Judge whether the document meets the requirements of the query and the instruction. "
    'Answer only "yes" or "no".'
)
DEFAULT_TEMPLATE = (
    "Instruction: {instruction}\n"
    "Query: {query}\n"
    "Document: {document}\n"
    "Is the document relevant to the query? Answer yes or no."
)
_FIELDS = {"instruction", "query", "document"}
_SENTINEL = "\u27e6urlkit-document-3f9c\u27e7"


@dataclass(frozen=True)
class Encoded:
    """One tokenised prompt. ``images`` are the paths a processor would insert (none here)."""

    input_ids: list[int]
    images: tuple[str, ...] = ()
    truncated: bool = False  # True when the document was cut to fit max_length


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
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; the prompt needs one to "
                             "open the assistant turn (use an instruction-tuned backbone)")
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if not {"query", "document"} <= names <= _FIELDS or template.count("{document}") != 1:
            raise ValueError(
                f"the prompt template needs {{query}} and exactly one {{document}}, may have "
                f"{{instruction}}, and nothing else; got fields {sorted(names)}"
            )
        self.tokenizer = tokenizer
        self.processor = processor
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.template = template
        self._template_without_instruction = "\n".join(
            line for line in template.split("\n") if "{instruction}" not in line
        )
        # Spaces right before {document} are tokenised with the document (" word" is one
        # BPE token, " " + "word" two), as they would be in one untruncated string.
        before = template.split("{document}")[0]
        self._document_lead = before[len(before.rstrip(" ")):]
        self._prefixes: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}
        self._documents: OrderedDict[str, list[int]] = OrderedDict()
        self._document_cache_size = document_cache_size
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0

    def encode(self, instruction: str, query: Query, doc: Document) -> Encoded:
        """Token ids of the full prompt, the document cut to fit ``max_length``."""
        for owner, image in ((f"query {query.id!r}", query.image), (f"document {doc.id!r}", doc.image)):
            if image is not None:
                raise DataError(
                    f"image on a text-only backbone: {owner} has an image ({image}); this "
                    "renderer writes text prompts only (images need a vision-language backbone "
                    "and the processor's prompt path)"
                )
        prefix, suffix = self._prefix_suffix(instruction, query)
        budget = self.max_length - len(prefix) - len(suffix)
        document = self._document_ids(doc)
        return Encoded(input_ids=prefix + document[:budget] + suffix,
                       truncated=len(document) > budget)

    def render_text(self, instruction: str, query: Query, doc: Document) -> str:
        """The full prompt as a string, untruncated (to read what the model sees)."""
        return self._chat_text(instruction, query.text).replace(_SENTINEL, _document_text(doc))

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
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def validate(self, split: Split) -> None:
        """Raise the DataError of the first query whose prompt cannot fit a document."""
        for query in split.queries:
            self._prefix_suffix(split.instruction_for(query), query)

    def _prefix_suffix(self, instruction: str, query: Query) -> tuple[list[int], list[int]]:
        key = (instruction, query.id, query.text)
        if key not in self._prefixes:
            prefix, suffix = self._chat_text(instruction, query.text).split(_SENTINEL)
            prefix = prefix.removesuffix(self._document_lead)
            ids = (self._tokenize(prefix), self._tokenize(suffix))
            fixed = len(ids[0]) + len(ids[1])
            if fixed >= self.max_length:
                raise DataError(
                    f"query {query.id!r}: system turn, instruction, query and answer suffix take "
                    f"{fixed} tokens, leaving no room for the document under max_length="
                    f"{self.max_length}; raise max_length or shorten the query/instruction"
                )
            self._prefixes[key] = ids
        return self._prefixes[key]

    def _document_ids(self, doc: Document) -> list[int]:
        ids = self._documents.get(doc.id)
        if ids is None:
            # Kept up to max_length tokens: no budget is ever larger.
            ids = self._tokenize(self._document_lead + _document_text(doc))[: self.max_length]
            self._documents[doc.id] = ids
            if len(self._documents) > self._document_cache_size:
                self._documents.popitem(last=False)
        else:
            self._documents.move_to_end(doc.id)
        return ids

    def _chat_text(self, instruction: str, query_text: str) -> str:
        template = self.template if instruction else self._template_without_instruction
        user = template.format(instruction=instruction, query=query_text, document=_SENTINEL)
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": user}]
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception:  # some templates (e.g. Gemma's) reject a system turn
            merged = [{"role": "user", "content": f"{self.system_prompt}\n\n{user}"}]
            text = self.tokenizer.apply_chat_template(merged, tokenize=False,
                                                      add_generation_prompt=True)
        if text.count(_SENTINEL) != 1:
            raise ValueError("the chat template did not keep the user turn verbatim; "
                             "cannot locate the document in the rendered prompt")
        return text

    def _tokenize(self, text: str) -> list[int]:
        # The chat template already wrote any BOS/special tokens as text.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _document_text(doc: Document) -> str:
    """Title, then text, on separate lines (the title survives truncation)."""
    return "\n".join(part for part in (doc.title, doc.text) if part)
