"""Every ```python block of README.md and docs/*.md runs as printed (```py blocks are illustrations)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
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
