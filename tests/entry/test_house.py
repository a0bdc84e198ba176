"""The rules of the house (docs/architecture.md), checked on the source: no import loop among
urlkit modules, no library module importing an entry point, no module over ~400 lines
without a reason in its docstring.

The imports are read with ``ast``, never executed: importing every module would run
``urlkit/bench/__main__.py`` (the benchmark) and pull in torch for nothing. Every import
counts, at module level or inside a function (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from urlkit.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "urlkit"

# Entry points: command lines (python -m ..., console scripts, notebooks' runner). Nothing in
# the library may import them; they import the library (and the package facade
# urlkit/__init__.py may expose urlkit.rerank from urlkit.inference, lazily).
ENTRY_POINTS = {
    "urlkit.run",
    "urlkit.evaluate",
    "urlkit.inference",
    "urlkit.significance",
    "urlkit.study",
    "urlkit.study.cli",
    "urlkit.study.__main__",
    "urlkit.findings",
    "urlkit.notebooks",
    "urlkit.export",
    "urlkit.machine",
    "urlkit.sweeps",
    "urlkit.bench.cli",
    "urlkit.bench.__main__",
}
# who may import an entry point anyway, and why
ALLOWED_ENTRY_IMPORTS = {
    ("urlkit", "urlkit.inference"): "the package facade: `urlkit.rerank(...)`, imported lazily",
}
# A loop known and being removed by its owner; listed, with who removes it, so that any OTHER
# loop fails the test (none now: analysis/ was split into runset, local_source, wandb_source).
KNOWN_CYCLES: set[frozenset[str]] = set()
MAX_LINES = 400
REASON_WORDS = ("lines", "long", "one file", "in one place", "kept together")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The urlkit modules ``name`` imports anywhere in its file (``from a.b import c``: a.b.c
    when that is a module, else a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import urlkit.loss.url` -> that module
                target = target.rpartition(".")[0]
            if target.startswith("urlkit") and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def test_the_walk_sees_the_imports_it_must():
    """Guards the test itself: known arrows are found, lazy ones included."""
    assert "urlkit.train" in GRAPH["urlkit.run"]
    assert "urlkit.evaluation.rerank" in GRAPH["urlkit.training.callbacks"]
    assert "urlkit.model.vision" in GRAPH["urlkit.model.backbone"]  # a lazy import inside load_backbone
    assert "urlkit.model.hub" in GRAPH["urlkit.model.vision"]
    assert "urlkit.bench.cli" in GRAPH["urlkit.bench.__main__"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_loop_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its own submodules is not a loop with them (Python
    imports the package first either way): arrows from a package into itself are dropped."""
    return {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}


def without_known_cycles(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: {t for t in targets if frozenset({name, t}) not in KNOWN_CYCLES} for name, targets in graph.items()}


def test_no_import_cycle_among_urlkit_modules():
    cycle = find_cycle(without_known_cycles(without_packages(GRAPH)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_library_module_imports_an_entry_point():
    assert ENTRY_POINTS <= set(MODULES), sorted(ENTRY_POINTS - set(MODULES))
    offenders = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name not in ENTRY_POINTS
        for target in sorted(targets & ENTRY_POINTS)
        if (name, target) not in ALLOWED_ENTRY_IMPORTS
    ]
    assert not offenders, offenders


def test_the_loss_imports_nothing_of_urlkit_but_itself():
    outside = {f"{name} imports {t}" for name in GRAPH if name.startswith("urlkit.loss")
               for t in GRAPH[name] if not t.startswith("urlkit.loss")}  # fmt: skip
    assert not outside, outside


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines_without_a_reason(name):
    path = MODULES[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert any(word in docstring.lower() for word in REASON_WORDS), (
        f"{path.relative_to(REPO_ROOT)} has {lines} lines (> {MAX_LINES}) and its docstring gives no "
        "reason to keep it in one file: split it, or say why in the docstring"
    )
