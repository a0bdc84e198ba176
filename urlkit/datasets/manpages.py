"""manpages: find the Linux manual page from a one-line description of what it documents.

Corpus  one document per page of the Debian packages ``manpages`` and ``manpages-dev``
        (sections 2, 3, 4, 5, 7 of the Linux man-pages project). Title: the page's names
        and section (``printf, fprintf, ... (3)``); text: its DESCRIPTION as plain text,
        whitespace collapsed, cut at a word boundary before ``max_chars`` (prompts are
        truncated long before that anyway). Alias pages -- symbolic links and ``.so``
        redirections -- resolve to their target and add no document.
Query   the NAME line with the names removed: "printf, fprintf - formatted output
        conversion" -> "formatted output conversion". Pages with the same description
        (``memcpy``, ``bcopy``, ... "copy memory area") share one query, all of them grade 2.
        Pages named in SEE ALSO of a relevant page are grade 1 (a training query's: training
        pages only, so no dev or test page is ever a training positive).
Train   The two packages hold about 1,100 pages, too few for 5,000 training queries with
        one query each; the training pages (and only they) add *paragraph queries*: the first
        sentence of each DESCRIPTION and NOTES paragraph, relevant page grade 2, kept when it
        reads as a sentence (6-40 words, a letter first, a full stop last, mostly letters,
        so code and tables drop out), does not name the page's own functions (``open()``,
        ``_exit``: a shortcut the NAME-line queries never offer) and occurs in no other page;
        at most ``per_page`` of them per page, evenly spread over the page. Dev and test keep
        the clean NAME-line form only.

Splits are by page group (pages sharing a NAME description stay together): see
:mod:`urlkit.datasets.splitting`. Run::

    python -m urlkit.datasets.manpages --out data/manpages --report
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from urlkit.datasets.bm25_report import print_report
from urlkit.datasets.build import BuiltDataset, DatasetBuildError, build_date, write_dataset
from urlkit.datasets.debian import package_files, package_versions
from urlkit.datasets.manpage_text import (
    ManPage,
    capped,
    first_sentence,
    mentions,
    parse_page,
    render,
    so_target,
)
from urlkit.datasets.splitting import assign_groups

NAME = "manpages"
CATEGORY = "T2T"
INSTRUCTION = (
    "Given a short description of what a Linux function, system call, file or facility "
    "does, retrieve the manual page that documents it."
)
PACKAGES = ["manpages", "manpages-dev"]
COPYRIGHT_FILE = Path("/usr/share/doc/manpages/copyright")  # covers manpages-dev as well
# man3/size_t.3type.gz: the folder names the section's digit, the file the full section.
PAGE_FILE = re.compile(r"(?:^|/)man(?P<digit>\d)\w*/(?P<page>[^/]+)\.(?P<section>(?P=digit)[a-z]*)(?:\.gz)?$")
BODY_SECTIONS = ("DESCRIPTION", "SYNOPSIS AND DESCRIPTION")
QUERY_SECTIONS = ("DESCRIPTION", "NOTES")
BULLET = re.compile(r"^(?:[\u2022*\u00b7-]|\(?\d{1,2}[.)])\s+")  # "• ", "* ", "1. ", "(2) "


def page_id(path: Path) -> str | None:
    """``/usr/share/man/man3/printf.3.gz`` -> ``printf.3``; None for a non-page path."""
    match = PAGE_FILE.search(str(path))
    return f"{match['page']}.{match['section']}" if match else None


def build_manpages(
    files: list[Path],
    *,
    max_chars: int = 2000,
    per_page: int = 30,
    test_queries: int = 300,
    dev_queries: int = 100,
    render_page: Callable[[Path], str] = render,
) -> BuiltDataset:
    """The manpages benchmark from man page files (the packages' ``dpkg -L`` list).

    ``render_page`` turns a page file into plain text (mandoc by default; tests pass their own).
    """
    skipped: Counter[str] = Counter()
    sources, aliases = resolve_aliases(files, skipped)
    pages: dict[str, ManPage] = {}
    for doc_id, path in sorted(sources.items()):
        text = render_page(path)  # a missing renderer stops the build right here
        try:
            page = parse_page(text, path=path)
        except DatasetBuildError:
            skipped["no NAME line"] += 1
            continue
        if not body_paragraphs(page):
            skipped["no DESCRIPTION"] += 1
            continue
        pages[doc_id] = page

    corpus = [
        {"id": doc_id, "title": f"{', '.join(page.names)} ({doc_id.rsplit('.', 1)[1]})",
         "text": capped(body_paragraphs(page), max_chars)}
        for doc_id, page in pages.items()
    ]
    related = {doc_id: related_pages(doc_id, page, aliases, pages) for doc_id, page in pages.items()}

    by_description: dict[str, list[str]] = defaultdict(list)
    for doc_id, page in pages.items():
        by_description[" ".join(page.description.lower().split())].append(doc_id)
    groups = {docs[0]: docs for docs in by_description.values()}  # key: first page id
    split_of_group = assign_groups(dict.fromkeys(groups, 1),
                                   {"test": test_queries, "dev": dev_queries})

    split_of_page = {d: split_of_group[key] for key, docs in groups.items() for d in docs}
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for key, docs in sorted(groups.items()):
        split = split_of_group[key]
        # a training query's related pages are training pages only: a dev or test page trained
        # as relevant (grade 1 is drawn as a positive too) would be a test answer seen in
        # training (the committed data of 2026-11-21 had 231 of 300 test queries' pages so).
        # An evaluation query keeps all of them: they only grade its ranking
        grades = {d: 1 for doc_id in docs for d in related[doc_id]
                  if d not in docs and (split != "train" or split_of_page[d] == "train")}
        splits[split].append({
            "id": f"{key}.name",
            "text": pages[key].description,
            "positives": {**dict.fromkeys(docs, 2), **dict(sorted(grades.items()))},
        })
    train_pages = [d for key, docs in groups.items() if split_of_group[key] == "train"
                   for d in docs]
    paragraph_queries = _paragraph_queries(pages, sorted(train_pages), per_page, skipped)
    splits["train"] = sorted(splits["train"] + paragraph_queries, key=lambda q: q["id"])

    stored = {doc["id"]: doc["text"] for doc in corpus}
    verbatim = sum(q["text"] in stored[next(iter(q["positives"]))] for q in paragraph_queries)
    return BuiltDataset(
        name=NAME,
        category=CATEGORY,
        instruction=INSTRUCTION,
        corpus=corpus,
        splits=splits,
        provenance={"max_chars": max_chars, "per_page": per_page},
        stats={
            "page files": len(files),
            "aliases": sum(alias != target for alias, target in aliases.items()),
            "pages": len(pages),
            "page groups": len(groups),
            "paragraph queries": len(paragraph_queries),
            "paragraph queries verbatim in the stored text": verbatim,
            "skipped": dict(sorted(skipped.items())),
        },
    )


def body_paragraphs(page: ManPage) -> list[str]:
    """The paragraphs a document is made of: DESCRIPTION (or SYNOPSIS AND DESCRIPTION)."""
    return next((page.sections[s] for s in BODY_SECTIONS if page.sections.get(s)), [])


def resolve_aliases(files: list[Path], skipped: Counter) -> tuple[dict[str, Path], dict[str, str]]:
    """Real page files ``{id: path}`` and ``{any page id: id of the page it shows}``."""
    by_id = {page_id(p): p for p in files if page_id(p) is not None}
    points_to: dict[str, str] = {}
    for doc_id, path in by_id.items():
        if path.is_symlink():
            points_to[doc_id] = page_id(Path(os.path.realpath(path))) or ""
        elif (target := so_target(path)) is not None:
            points_to[doc_id] = page_id(Path(target)) or ""
    sources = {d: p for d, p in by_id.items() if d not in points_to}
    aliases = {d: d for d in sources}
    for doc_id, target in points_to.items():
        seen = {doc_id}
        while target in points_to and target not in seen:  # a link to a .so page, ...
            seen.add(target)
            target = points_to[target]
        if target in sources:
            aliases[doc_id] = target
        else:
            skipped["alias to a page outside the packages"] += 1
    return sources, aliases


def related_pages(doc_id: str, page: ManPage, aliases: dict[str, str], pages: dict) -> list[str]:
    """Corpus pages named in SEE ALSO, aliases resolved, the page itself left out."""
    found = {aliases.get(f"{name}.{section}") for name, section in page.see_also}
    return sorted(d for d in found if d in pages and d != doc_id)


def _paragraph_queries(
    pages: dict[str, ManPage], train_pages: list[str], per_page: int, skipped: Counter
) -> list[dict]:
    """First sentences of DESCRIPTION/NOTES paragraphs of the training pages (module doc)."""
    training = set(train_pages)
    sentences: dict[str, list[str]] = {}
    pages_of: dict[str, set[str]] = defaultdict(set)
    for doc_id, page in pages.items():  # all pages: uniqueness is across the whole corpus
        sentences[doc_id] = []
        for section in QUERY_SECTIONS:
            for paragraph in page.sections.get(section, []):
                sentence = first_sentence(BULLET.sub("", paragraph))
                if not _reads_as_sentence(sentence):
                    skipped["paragraph: not a prose sentence"] += doc_id in training
                elif mentions(sentence, page.names):
                    skipped["paragraph: names its own page"] += doc_id in training
                elif sentence.lower() != page.description.lower():
                    sentences[doc_id].append(sentence)
                    pages_of[sentence].add(doc_id)
    queries = []
    for doc_id in train_pages:
        unique = list(dict.fromkeys(s for s in sentences[doc_id] if len(pages_of[s]) == 1))
        skipped["paragraph: in several pages"] += len(set(sentences[doc_id])) - len(unique)
        chosen = unique if len(unique) <= per_page else [
            unique[i * len(unique) // per_page] for i in range(per_page)
        ]
        skipped["paragraph: over the per-page cap"] += len(unique) - len(chosen)
        queries += [{"id": f"{doc_id}.p{k:02d}", "text": s, "positives": {doc_id: 2}}
                    for k, s in enumerate(chosen)]
    return queries


def _reads_as_sentence(sentence: str) -> bool:
    words = sentence.split()
    visible = sentence.replace(" ", "")
    return (
        6 <= len(words) <= 40
        and sentence[0].isalpha()
        and sentence.endswith(".")
        and sum(c.isalpha() for c in visible) >= 0.75 * len(visible)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m urlkit.datasets.manpages",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="dataset folder to write (e.g. data/manpages)")
    parser.add_argument("--max-chars", type=int, default=2000,
                        help="a page's text is cut at a word boundary before this length (default: %(default)s)")
    parser.add_argument("--per-page", type=int, default=30,
                        help="most paragraph queries per training page (default: %(default)s)")
    parser.add_argument("--test-queries", type=int, default=300, help="test queries (default: %(default)s)")
    parser.add_argument("--dev-queries", type=int, default=100, help="dev queries (default: %(default)s)")
    parser.add_argument("--report", action="store_true",
                        help="print split sizes and BM25's scores over the whole corpus")
    args = parser.parse_args(argv)
    try:
        versions = package_versions(PACKAGES)
        files = [p for p in package_files(PACKAGES) if page_id(p) is not None]
        dataset = build_manpages(files, max_chars=args.max_chars, per_page=args.per_page,
                                 test_queries=args.test_queries, dev_queries=args.dev_queries)
    except DatasetBuildError as err:
        sys.exit(f"error: {err}")
    dataset.provenance = {
        "debian_packages": versions,
        "command": shlex.join(["python", "-m", "urlkit.datasets.manpages", *(argv or sys.argv[1:])]),
        "built": build_date(),
        "renderer": f"mandoc -T utf8 -O width=1000 (mandoc {package_versions(['mandoc'])['mandoc']})",
        "licence": "per page, see COPYRIGHT (from /usr/share/doc/manpages/copyright)",
        **dataset.provenance,
    }
    # "Formatted or processed versions ... must acknowledge the copyright and authors"
    dataset.attachments = {"COPYRIGHT": COPYRIGHT_FILE}
    if args.out:
        write_dataset(dataset, args.out)
        print(f"wrote {args.out}")
    print_report(dataset, pool="corpus" if args.report else None)


if __name__ == "__main__":
    main()
