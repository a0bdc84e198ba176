"""README.md and docs/*.md as a new user reads them: every ```python block runs as printed (```py
blocks are illustrations), and every link to a file of the repository (and its #anchor) resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# every Markdown page a user can reach from the README, the data and results folders' included
LINKED_PAGES = sorted(
    path for path in ROOT.rglob("*.md")
    if not any(part.startswith(".") or part in ("outputs", "node_modules") for part in path.relative_to(ROOT).parts)
)
BLOCKS = [
    pytest.param(page, i, block, id=f"{page.relative_to(ROOT)}#{i}")
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL))
]


@pytest.mark.parametrize("page,index,block", BLOCKS)
def test_documented_example_runs(page, index, block, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # examples use repository-relative paths such as data/wordsense
    exec(compile(block, f"{page.name} example {index}", "exec"), {"__name__": "__docs__"})


def test_the_readme_shows_the_loss_and_the_one_line_use():
    text = (ROOT / "README.md").read_text()
    assert "python -m urlkit.run weight=sft direction=cl" in text
    assert "```python" in text and "url_loss" in text


def _prose(text: str) -> str:
    """A page without its fenced code blocks (a link there is code, not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", _prose(page.read_text()), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    """A link is relative to the page that holds it: docs/x.md's ``data/README.md`` is
    docs/data/README.md, not the repository's data/README.md."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading with anchor #{anchor} in {linked.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def _configuration_table() -> dict[str, str]:
    """README's "Configuration" table: group -> its "options" cell."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", section, flags=re.MULTILINE))


def test_the_readme_configuration_table_lists_every_config_group_and_its_options():
    """Every group of conf/ has a row, and a row names exactly the group's options (before
    "; key(s)", where the keys are described): an option added, renamed or removed shows."""
    rows = _configuration_table()
    groups = sorted(path.name for path in (ROOT / "conf").iterdir() if path.is_dir())
    assert sorted(rows) == groups, "README's Configuration table: rows for conf/'s groups"
    for group, cell in rows.items():
        named = {name for name in re.findall(r"`(\w+)`", re.split(r"; keys? ", cell)[0])}
        options = {path.stem for path in (ROOT / "conf" / group).glob("*.yaml")}
        if group == "experiment":  # one per table and figure: the Studies section lists them
            continue
        assert named == options, f"README's Configuration table, `{group}`: names {sorted(named)}, conf/{group}/ holds {sorted(options)}"
