"""The usage example of docs/readme/loss.md runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "docs" / "readme" / "loss.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, f"no python example in {README}"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
