"""Prompt formats: the ``prompt`` config group (conf/prompt/) as a value.

A format is what the renderer (:mod:`urlkit.data.prompts`) needs to write a prompt: a system
turn, a user-turn template with ``{instruction}``, ``{query}`` and ``{document}``, a default
instruction, the answer tokens, and the chat template that writes the turns (None: the
backbone's own). ``prompt=urlkit`` is :data:`DEFAULT_SYSTEM_PROMPT` + :data:`DEFAULT_TEMPLATE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from urlkit.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = (
    "Judge whether the document meets the requirements of the query and the instruction. "
    'Answer only "yes" or "no".'
)
# The question follows the document, where the backbone reads it right before its answer, in
# one word: whatever follows the document every candidate computes (SmolLM2: 4 tokens and the
# turn's 6-token end, against 20 for "Is the document relevant to the query? Answer yes or no."
# until session 25, now ``prompt=urlkit_long_question``); the system turn above, which a query's
# candidates share, says what to answer. On wordsense: +2.06 dev NDCG@10 (3 seeds) and the default
# experiment in 0.73x the time (docs/performance.md, session 25; results/tuning_prompts/).
DEFAULT_TEMPLATE = (
    "Instruction: {instruction}\n"
    "Query: {query}\n"
    "Document: {document}\n"
    "Relevant?"
)


@dataclass(frozen=True)
class PromptFormat:
    """How a (instruction, query, document) triple becomes a prompt: the ``prompt`` config group.

    ``chat_template``: a Jinja chat template that writes the turns (e.g. Qwen3-Reranker's ChatML
    with an empty think block), or None for the backbone's own. ``tokens``: the answer tokens
    the prompt asks for (column 0 relevant, column 1 not), the default of ``head.tokens``.
    """

    name: str = "urlkit"
    system: str = DEFAULT_SYSTEM_PROMPT
    template: str = DEFAULT_TEMPLATE
    default_instruction: str = ""
    tokens: tuple[str, ...] = ("yes", "no")
    chat_template: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PromptFormat:
        """From the ``prompt`` group (a dict or DictConfig); None gives urlkit's format (runs
        recorded before formats were configurable have no ``prompt`` key)."""
        if cfg is None:
            return cls()
        known = {"name", "system", "template", "default_instruction", "tokens", "chat_template"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"prompt: unknown key(s) {unknown}; a prompt format has {sorted(known)}")
        values = {key: cfg[key] for key in known if key in cfg}
        for key in ("system", "template"):  # a null system turn was written as the text "None"
            if key in values and not isinstance(values[key], str):
                raise ConfigError(f"prompt.{key}={values[key]!r} must be a string"
                                  + (" ('' for an empty system turn)" if key == "system" else ""))
        if "tokens" in values:
            if isinstance(values["tokens"], str):  # tuple("yes") would be the tokens 'y', 'e', 's'
                raise ConfigError(f"prompt.tokens={values['tokens']!r} must be a list of answer tokens, "
                                  "e.g. [yes, no]")
            values["tokens"] = tuple(str(t) for t in values["tokens"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "system": self.system, "template": self.template,
                "default_instruction": self.default_instruction, "tokens": list(self.tokens),
                "chat_template": self.chat_template}
