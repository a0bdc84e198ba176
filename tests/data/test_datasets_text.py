"""The embedded text benchmarks: committed data (data/wordsense, data/manpages) and builders.

Three layers: (1) the committed folders load with urlkit's own loader and keep their promises
(sizes, disjoint splits, positives in corpus and pool); (2) the builders' logic on tiny
synthetic WordNet files and man pages written here, so no Debian package is needed; (3) where
the packages are installed in the committed versions, a slice rebuilt from them matches the
committed data byte for byte (per record).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from urlkit.data.loaders import load_split
from urlkit.datasets.build import BuiltDataset, write_dataset
from urlkit.datasets.manpage_text import first_sentence, mentions, parse_page, render, so_target
from urlkit.datasets.manpages import build_manpages, page_id, related_pages, resolve_aliases
from urlkit.datasets.splitting import assign_groups
from urlkit.datasets.wordnet import Morphology, split_gloss, tokens
from urlkit.datasets.wordsense import build_wordsense

DATA = Path(__file__).resolve().parents[2] / "data"
SPLITS = ("train", "dev", "test")
WORD = re.compile(r"^word: (.+?) \| sentence: (.+)$")


@pytest.fixture(scope="module", params=["wordsense", "manpages"])
def committed(request):
    """``(name, {split: Split})`` of a committed benchmark, read by urlkit's loader."""
    name = request.param
    return name, {s: load_split(DATA / name, s, on_error="raise") for s in SPLITS}


# --- (1) the committed data ---------------------------------------------------------------


def test_committed_data_loads_and_meets_the_minimum_sizes(committed):
    name, splits = committed
    assert len(splits["train"].queries) >= 5000
    assert len(splits["test"].queries) >= 300
    for split in splits.values():
        assert split.name == name and split.category == "T2T" and split.instruction
        assert not split.skipped
        for query in split.queries:
            assert query.positives and all(d in split.corpus for d in query.qrels)
    info = json.loads((DATA / name / "dataset.json").read_text())
    assert info["provenance"]["debian_packages"]
    total_bytes = sum(f.stat().st_size for f in (DATA / name).iterdir())
    assert total_bytes < 8 * 2**20


def test_committed_splits_share_no_word_or_page(committed):
    name, splits = committed
    groups = {}
    for split_name, split in splits.items():
        if name == "wordsense":
            keys = {WORD.match(q.text).group(1) for q in split.queries}
        else:  # the pages a query is about (grade 2); grade 1 pages are only related
            keys = {d for q in split.queries for d, g in q.qrels.items() if g == 2}
        groups[split_name] = keys
    assert not groups["train"] & groups["dev"]
    assert not groups["train"] & groups["test"]
    assert not groups["dev"] & groups["test"]
    if name == "manpages":  # nor is an evaluation page a training positive of any grade
        trained = {d for q in splits["train"].queries for d in q.qrels}
        assert not trained & (groups["dev"] | groups["test"])


def test_committed_wordsense_pools_hold_every_positive():
    test = load_split(DATA / "wordsense", "test")
    for query in test.queries:
        assert WORD.match(query.text), query.text
        assert 2 <= len(query.candidates) <= 25
        assert set(query.positives) <= set(query.candidates)
        assert all(d in test.corpus for d in query.candidates)
        assert query.candidates == sorted(query.candidates)  # order says nothing


def test_committed_manpages_eval_queries_are_name_lines():
    for split in ("dev", "test"):
        loaded = load_split(DATA / "manpages", split)
        for query in loaded.queries:
            assert query.id.endswith(".name") and query.candidates is None
            assert set(query.qrels.values()) <= {1, 2} and 2 in query.qrels.values()
        assert all(len(doc.text) <= 2000 for doc in loaded.corpus.values())


# --- (2) the builders on synthetic input ------------------------------------------------------


def _synset(offset: int, pos: str, words: list[str], gloss: str) -> str:
    pairs = " ".join(f"{w} 0" for w in words)
    return f"{offset:08d} 03 {pos} {len(words):02x} {pairs} 000 | {gloss}  "


def _index(lemma: str, pos: str, offsets: list[int]) -> str:
    return f"{lemma} {pos} {len(offsets)} 0 {len(offsets)} 0 " + " ".join(f"{o:08d}" for o in offsets)


@pytest.fixture
def tiny_wordnet(tmp_path):
    header = "  1 This software and database is being provided ...\n"
    data = {
        "noun": [
            _synset(1, "n", ["bank"], 'sloping land beside water; "they pulled the canoe up on the bank"; '
                    '"he sat on the banks of the river"'),
            _synset(2, "n", ["bank", "depository_financial_institution"],
                    'a financial institution; "he cashed a check at the bank"'),
            _synset(3, "n", ["bank"], 'a long ridge or pile; "a huge bank of earth"'),
            _synset(4, "n", ["cash"], 'money in bills or coins; "no cash in the drawer"'),
            _synset(5, "n", ["spring"], 'a natural flow of water; "drink from the spring"'),
            _synset(6, "n", ["spring"], "a natural flow of water"),
            _synset(7, "n", ["plant"], 'buildings for industry; "they built a large factory"'),
            _synset(8, "n", ["plant"], 'a living organism; "the plants need water"'),
        ],
        "verb": [
            _synset(11, "v", ["run"], 'move fast on foot; "he ran to the store"'),
            _synset(12, "v", ["run", "take_off"], 'be in charge of; "she runs the company"; '
                    '"the plane took off"'),
        ],
        "adj": [], "adv": [],
    }
    index = {
        "noun": [_index("bank", "n", [2, 1, 3]), _index("cash", "n", [4]),
                 _index("depository_financial_institution", "n", [2]),
                 _index("plant", "n", [8, 7]), _index("spring", "n", [5, 6])],
        "verb": [_index("run", "v", [11, 12]), _index("take_off", "v", [12])],
        "adj": [], "adv": [],
    }
    for suffix in data:
        (tmp_path / f"data.{suffix}").write_text(header + "".join(x + "\n" for x in data[suffix]))
        (tmp_path / f"index.{suffix}").write_text(header + "".join(x + "\n" for x in index[suffix]))
    (tmp_path / "verb.exc").write_text("ran run\ntook take\n")
    return tmp_path


def test_split_gloss_separates_definition_and_examples():
    assert split_gloss('a bank; "he sat on the bank"; "the bank" -- Anon') == (
        "a bank", ("he sat on the bank", "the bank"))
    assert split_gloss("a bank (of a river); no example") == ("a bank (of a river); no example", ())


def test_morphology_recognises_inflections_and_phrases():
    morphology = Morphology({"v": {"took": {"take"}, "ran": {"run"}}, "n": {}})
    assert morphology.occurs("take off", tokens("The plane took off."), "v")
    assert morphology.occurs("run", tokens("she runs the show"), "v")
    assert morphology.occurs("bank", tokens("the river's banks"), "n")
    assert not morphology.occurs("bank", tokens("a banker"), "n")
    assert not morphology.occurs("take off", tokens("take it off"), "v")


def test_wordsense_builder_on_tiny_wordnet(tiny_wordnet):
    built = build_wordsense(tiny_wordnet, test_queries=0, dev_queries=0)
    queries = {q["id"]: q for q in built.splits["train"]}
    assert sorted(queries) == ["n00000001.0", "n00000001.1", "n00000002.0", "n00000003.0",
                               "n00000008.0", "v00000011.0", "v00000012.0"]
    assert queries["n00000001.1"] == {
        "id": "n00000001.1", "text": "word: bank | sentence: he sat on the banks of the river",
        "positives": {"n00000001": 1}, "candidates": ["n00000001", "n00000002", "n00000003"]}
    assert queries["v00000011.0"]["text"] == "word: run | sentence: he ran to the store"
    assert queries["n00000008.0"]["candidates"] == ["n00000007", "n00000008"]
    # "the plane took off": "take off" is found (took -> take) but has a single sense
    assert built.stats["skipped"] == {
        "monosemous word": 2, "no lemma in the sentence": 1,
        "definition shared by two senses in the pool": 1}
    corpus = {d["id"]: d["text"] for d in built.corpus}
    assert corpus["n00000002"] == "a financial institution"  # definition only, no lemmas
    assert "n00000004" not in corpus  # no query uses it


def test_wordsense_pool_cap_keeps_the_positive_and_frequent_senses(tiny_wordnet):
    built = build_wordsense(tiny_wordnet, pool_size=2, test_queries=0, dev_queries=0)
    queries = {q["id"]: q for q in built.splits["train"]}
    # index order of "bank": 2, 1, 3 -> sense 3 keeps itself and the most frequent sense 2
    assert queries["n00000003.0"]["candidates"] == ["n00000002", "n00000003"]
    assert queries["n00000002.0"]["candidates"] == ["n00000001", "n00000002"]


def test_wordsense_splits_by_word(tiny_wordnet):
    built = build_wordsense(tiny_wordnet, test_queries=1, dev_queries=1)
    words = {s: {WORD.match(q["text"]).group(1) for q in qs} for s, qs in built.splits.items()}
    assert all(words[s] for s in SPLITS)
    assert sum(len(w) for w in words.values()) == len(set().union(*words.values())) == 3


def _rendered(title: str, sections: dict[str, list[str]]) -> str:
    """A page as mandoc renders it: header, headings in column 0, indented paragraphs, footer."""
    body = "".join(f"{h}\n" + "\n\n".join(f"       {p}" for p in ps) + "\n\n"
                   for h, ps in sections.items())
    return f"{title}    Library Functions Manual    {title}\n\n{body}Linux 2023-02-05    {title}\n"


FOO_DESCRIPTION = [
    "The foo() function frobnicates the widget pointed to by w.",
    "Widgets are frobnicated in place without allocating any memory.",
    "int x = foo(w);",
    "Frobnication of widgets is idempotent and may be repeated safely.  Really.",
    "• Every widget keeps its colour while it is being frobnicated.",
]
PAGES = {
    "man3/foo.3.gz": _rendered("FOO(3)", {
        "NAME": ["foo, foo_r - frobnicate a widget"], "DESCRIPTION": FOO_DESCRIPTION,
        "NOTES": ["Widgets are frobnicated in place without allocating any memory."],
        "SEE ALSO": ["bar(3), baz(3), nothere(3)"]}),
    "man3/bar.3.gz": _rendered("BAR(3)", {
        "NAME": ["bar - frobnicate a widget"],
        "DESCRIPTION": ["Bar does what foo does, but for gadgets as well as widgets."],
        "SEE ALSO": ["foo_r(3)"]}),
    "man3/qux.3.gz": _rendered("QUX(3)", {
        "NAME": ["qux - count the widgets"], "DESCRIPTION": ["Counting widgets " * 20]}),
    "man2/zap.2.gz": _rendered("ZAP(2)", {
        "NAME": ["zap - remove a widget"],
        "DESCRIPTION": ["The removal of a widget cannot be undone by any means."]}),
    "man7/nodesc.7.gz": _rendered("NODESC(7)", {"NAME": ["nodesc - a page without body"]}),
}


@pytest.fixture
def tiny_manpages(tmp_path):
    """Page files (content: their rendered text), a symlink alias and a .so alias."""
    files = []
    for name in PAGES:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(gzip.compress(b".TH placeholder\n"))
        files.append(path)
    (tmp_path / "man3/foo_r.3.gz").symlink_to("foo.3.gz")
    (tmp_path / "man3/baz.3.gz").write_bytes(gzip.compress(b'.\\" alias\n.so man3/qux.3\n'))
    files += [tmp_path / "man3/foo_r.3.gz", tmp_path / "man3/baz.3.gz"]

    def render_page(path: Path) -> str:
        return PAGES[f"{path.parent.name}/{path.name}"]

    return sorted(files), render_page


def test_manpage_text_parsing():
    page = parse_page(PAGES["man3/foo.3.gz"])
    assert page.names == ("foo", "foo_r") and page.description == "frobnicate a widget"
    assert page.see_also == (("bar", "3"), ("baz", "3"), ("nothere", "3"))
    assert page.sections["DESCRIPTION"] == [" ".join(p.split()) for p in FOO_DESCRIPTION]
    assert first_sentence(FOO_DESCRIPTION[3]).endswith("safely.")
    assert mentions("The foo() function frobnicates", page.names)
    assert mentions("Keep foo_r for threads.", page.names)
    assert not mentions("The food is ready for everyone.", page.names)
    assert page_id(Path("/usr/share/man/man3/size_t.3type.gz")) == "size_t.3type"


def test_manpages_builder_on_tiny_pages(tiny_manpages):
    files, render_page = tiny_manpages
    built = build_manpages(files, max_chars=40, test_queries=0, dev_queries=0,
                           render_page=render_page)
    corpus = {d["id"]: d for d in built.corpus}
    assert sorted(corpus) == ["bar.3", "foo.3", "qux.3", "zap.2"]  # aliases and nodesc: none
    assert corpus["foo.3"]["title"] == "foo, foo_r (3)"
    assert corpus["qux.3"]["text"] == "Counting widgets Counting widgets"  # cut at a word
    queries = {q["id"]: q for q in built.splits["train"]}
    # same description -> one query, both pages grade 2; baz(3) is an alias of qux(3)
    assert queries["bar.3.name"] == {"id": "bar.3.name", "text": "frobnicate a widget",
                                     "positives": {"bar.3": 2, "foo.3": 2, "qux.3": 1}}
    assert "foo.3.name" not in queries
    paragraphs = sorted(q["text"] for q in queries.values() if q["id"].startswith("foo.3.p"))
    assert paragraphs == [
        "Every widget keeps its colour while it is being frobnicated.",
        "Frobnication of widgets is idempotent and may be repeated safely.",
        "Widgets are frobnicated in place without allocating any memory.",
    ]
    assert built.stats["skipped"]["no DESCRIPTION"] == 1
    capped = build_manpages(files, per_page=1, test_queries=0, dev_queries=0,
                            render_page=render_page)
    assert sum(q["id"].startswith("foo.3.p") for q in capped.splits["train"]) == 1


def test_manpages_split_keeps_page_groups_and_paragraph_queries_in_train(tiny_manpages):
    files, render_page = tiny_manpages
    built = build_manpages(files, test_queries=1, dev_queries=1, render_page=render_page)
    for split in ("dev", "test"):
        assert [q["id"].endswith(".name") for q in built.splits[split]] == [True]
    pages = {s: {d for q in qs for d, g in q["positives"].items() if g == 2}
             for s, qs in built.splits.items()}
    assert not (pages["train"] & pages["test"]) and not (pages["train"] & pages["dev"])
    for query in built.splits["train"]:
        if ".p" in query["id"]:
            assert set(query["positives"]) <= pages["train"]


def test_manpages_training_queries_relate_to_training_pages_only(tiny_manpages):
    # foo(3) and bar(3) share a query whose SEE ALSO names qux(3) (through the alias baz(3)):
    # with qux's group in test, the training query keeps its own pages and drops qux, which the
    # test query keeps; with everything in train, qux is the training query's grade 1
    files, render_page = tiny_manpages
    built = build_manpages(files, test_queries=2, dev_queries=0, render_page=render_page)
    split_of = {d: s for s, qs in built.splits.items() for q in qs for d, g in q["positives"].items() if g == 2}
    assert split_of["qux.3"] == "test" and split_of["foo.3"] == "train"
    for query in built.splits["train"]:
        assert {split_of[d] for d in query["positives"]} == {"train"}, query
    assert {q["id"]: q["positives"] for q in built.splits["train"]}["bar.3.name"] == {"bar.3": 2, "foo.3": 2}
    everything = build_manpages(files, test_queries=0, dev_queries=0, render_page=render_page)
    assert {q["id"]: q["positives"] for q in everything.splits["train"]}["bar.3.name"]["qux.3"] == 1


def test_assign_groups_is_deterministic_and_fills_targets_in_order():
    counts = {f"w{i}": 1 + i % 3 for i in range(200)}
    first = assign_groups(counts, {"test": 30, "dev": 20})
    assert first == assign_groups(dict(reversed(counts.items())), {"test": 30, "dev": 20})
    sizes = {s: sum(counts[k] for k, v in first.items() if v == s) for s in SPLITS}
    assert 30 <= sizes["test"] < 33 and 20 <= sizes["dev"] < 23
    assert sizes["train"] == sum(counts.values()) - sizes["test"] - sizes["dev"]


def test_write_dataset_is_byte_deterministic_and_loadable(tmp_path):
    built = BuiltDataset(
        name="tiny", category="T2T", instruction="Find it.",
        corpus=[{"id": "d1", "text": "café"}, {"id": "d2", "text": "tea"}],
        splits={s: [{"id": f"{s}1", "text": "coffee", "positives": {"d1": 1},
                     "candidates": ["d1", "d2"]}] for s in SPLITS},
        provenance={"debian_packages": {}},
    )
    write_dataset(built, tmp_path / "a")
    os.utime(tmp_path / "a" / "corpus.jsonl.gz", (0, 0))
    write_dataset(built, tmp_path / "b")
    for stem in ("corpus", *SPLITS):
        a, b = (tmp_path / x / f"{stem}.jsonl.gz" for x in "ab")
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime field
    test = load_split(tmp_path / "a", "test")
    assert test.corpus["d1"].text == "café" and test.queries[0].candidates == ["d1", "d2"]


# --- (3) against the real Debian packages, where installed -------------------------------


def _require_committed_packages(name: str) -> None:
    """Skip unless the packages the committed data came from are installed, same versions."""
    from urlkit.datasets.build import DatasetBuildError
    from urlkit.datasets.debian import package_versions

    committed_versions = json.loads((DATA / name / "dataset.json").read_text())[
        "provenance"]["debian_packages"]
    try:
        installed = package_versions(list(committed_versions))
    except DatasetBuildError as err:
        pytest.skip(f"Debian packages not installed: {err}")
    if installed != committed_versions:
        pytest.skip(f"installed {installed} differ from the committed {committed_versions}")


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
def test_mandoc_rendering_of_a_roff_page(tmp_path):
    source = tmp_path / "man3" / "frob.3"
    source.parent.mkdir()
    source.write_text(
        '.TH FROB 3 2023-01-01 "test" "Library Functions Manual"\n.SH NAME\n'
        "frob, frob_r \\- frobnicate a widget\n.SH DESCRIPTION\nThe\n.BR frob ()\n"
        "function frobnicates\n.IR w .\n.PP\nA second\nparagraph.\n.SH SEE ALSO\n"
        ".BR bar (3),\n.BR baz (7)\n"
    )
    page = parse_page(render(source))
    assert page.names == ("frob", "frob_r") and page.description == "frobnicate a widget"
    assert page.sections["DESCRIPTION"] == ["The frob() function frobnicates w.",
                                            "A second paragraph."]
    assert page.see_also == (("bar", "3"), ("baz", "7"))
    alias = tmp_path / "man3" / "frob_r.3"
    alias.write_text(".so man3/frob.3\n")
    assert so_target(alias) == "man3/frob.3"


def test_wordsense_slice_rebuilds_from_wordnet():
    _require_committed_packages("wordsense")
    from urlkit.datasets.wordnet import POS_FILES, read_exceptions, read_index, read_synsets
    from urlkit.datasets.wordsense import WORDNET_DIR, ExampleQueries

    info = json.loads((DATA / "wordsense" / "dataset.json").read_text())
    synsets, senses, exceptions = {}, {}, {}
    for pos, suffix in POS_FILES.items():
        synsets.update((s.id, s) for s in read_synsets(WORDNET_DIR / f"data.{suffix}", pos))
        senses[pos] = read_index(WORDNET_DIR / f"index.{suffix}", pos)
        exceptions[pos] = read_exceptions(WORDNET_DIR / f"{suffix}.exc")
    make = ExampleQueries(synsets, senses, Morphology(exceptions), info["provenance"]["pool_size"])
    with gzip.open(DATA / "wordsense" / "test.jsonl.gz", "rt") as f:
        committed = [json.loads(line) for line in f][::5]
    rebuilt = {q["id"]: q for record in committed
               for _, _, q in make.of(synsets[next(iter(record["positives"]))])}
    assert [rebuilt.get(record["id"]) for record in committed] == committed


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
def test_manpages_slice_rebuilds_from_the_packages():
    _require_committed_packages("manpages")
    from collections import Counter

    from urlkit.datasets.debian import package_files
    from urlkit.datasets.manpage_text import capped
    from urlkit.datasets.manpages import PACKAGES, body_paragraphs

    info = json.loads((DATA / "manpages" / "dataset.json").read_text())
    with gzip.open(DATA / "manpages" / "corpus.jsonl.gz", "rt") as f:
        corpus = {d["id"]: d for d in map(json.loads, f)}
    with gzip.open(DATA / "manpages" / "test.jsonl.gz", "rt") as f:
        committed = [json.loads(line) for line in f][::15]
    files = [p for p in package_files(PACKAGES) if page_id(p) is not None]
    sources, aliases = resolve_aliases(files, Counter())
    for query in committed:
        group = [d for d, g in query["positives"].items() if g == 2]
        pages = {d: parse_page(render(sources[d])) for d in group}
        assert query["text"] == pages[group[0]].description
        related = {d for doc_id, page in pages.items()
                   for d in related_pages(doc_id, page, aliases, corpus)} - set(group)
        assert related == {d for d, g in query["positives"].items() if g == 1}
        for doc_id, page in pages.items():
            assert corpus[doc_id]["text"] == capped(body_paragraphs(page), info["provenance"]["max_chars"])
            assert corpus[doc_id]["title"].startswith(", ".join(page.names) + " (")


def test_builders_name_the_bad_file_and_line(tiny_wordnet, tmp_path):
    from urlkit.datasets.build import DatasetBuildError

    with pytest.raises(DatasetBuildError, match=r"missing/data\.noun: WordNet file not found"):
        build_wordsense(tmp_path / "missing")
    with open(tiny_wordnet / "data.verb", "a") as f:
        f.write("00000099 03 v zz run 0 000 | broken\n")
    with pytest.raises(DatasetBuildError, match=r"data\.verb:4: not a WordNet data line"):
        build_wordsense(tiny_wordnet)
    with pytest.raises(DatasetBuildError, match="NAME line"):
        parse_page("X(1)  header\n\nNAME\n       no dash here\n\nfooter\n")
