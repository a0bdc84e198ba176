"""README.md and docs/*.md as a new user reads them: every ```python block runs as printed (```py
blocks are illustrations), and every link to a file of the repository (and its #anchor) resolves."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from urlkit.config import register_resolvers
from urlkit.grids import expand

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


# ---- every command a page tells the user to run is one its program accepts ----------------------

PLACEHOLDER = "PLACEHOLDER"  # what a page's <run>, <M-BEIR root>, ... stand for here
HYDRA_APPS = {"run": "train", "evaluate": "evaluate"}  # module -> its conf/*.yaml


def _command_text(page: Path) -> str:
    """A page as its commands read: performance.md's session history (commands as they were run
    then) left out, fenced blocks other than shell ones dropped, a backtick span or a command
    continued over a line break joined into one line."""
    text = page.read_text()
    if page.name == "performance.md":
        text = text.split("\n### Session ", 1)[0]
    kept, fence = [], None  # fence: the open block's language
    for line in text.splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence not in (None, "bash", "sh"):
            continue
        if kept and (kept[-1].endswith("\\") or kept[-1].count("`") % 2):
            kept[-1] = kept[-1].removesuffix("\\").rstrip() + " " + line.strip()
        else:
            kept.append(line)
    return "\n".join(kept)


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, arguments) of every ``python -m urlkit.<module> <arguments>`` (and ``torchrun
    ... -m urlkit.run``) that README.md and docs/*.md give in a shell block, an indented block or
    backticks; comments dropped, ``[--flag ...]`` taken as given, each ``<...>`` a placeholder.
    A module named without arguments, or followed by prose, is not a command to check."""
    commands = []
    helps = {f"conf/{name}.yaml (--help)": OmegaConf.select(OmegaConf.load(ROOT / "conf" / f"{name}.yaml"), "hydra.help.header", default="")
             for name in HYDRA_APPS.values()}  # the examples python -m urlkit.run/evaluate --help shows
    sources = {**{str(page.relative_to(ROOT)): _command_text(page) for page in PAGES}, **helps}
    for where, text in sources.items():
        for match in re.finditer(r"(?<![\w-])-m urlkit\.(\w+(?:\.\w+)*)([^`\n)]*)", text):
            module, rest = match.group(1), match.group(2).split(" #")[0]
            rest = re.sub(r"<[^>]*>", PLACEHOLDER, re.sub(r"\[(--[^\]]*)\]", r"\1", rest))
            if not rest.strip() or not re.match(r"\s+([-\w.+~]+=|-|\S*[/{}]|PLACEHOLDER|[a-z]\w*(\s|$))", rest):
                continue
            commands.append((where, module, shlex.split(rest)))
    return commands


COMMANDS = documented_commands()


class _ParserCaught(Exception):
    def __init__(self, parser, method):
        self.parser, self.method = parser, method


PARSE_METHODS = ("parse_args", "parse_intermixed_args", "parse_known_args")


def _parser_of(main, monkeypatch):
    """The argparse parser a CLI's ``main`` builds and the method it parses with (``main`` is
    stopped where it would parse)."""
    with monkeypatch.context() as patch:
        for method in PARSE_METHODS:
            def catch(parser, *args, method=method, **kwargs):
                raise _ParserCaught(parser, method)

            patch.setattr(argparse.ArgumentParser, method, catch)
        patch.setattr(sys, "argv", ["prog"])
        with pytest.raises(_ParserCaught) as caught:
            main(["--help"]) if main.__code__.co_argcount else main()
    return caught.value.parser, caught.value.method


def _cli_main(module: str):
    if module.startswith("scripts/"):  # a script run as ``python scripts/<name>.py``
        spec = importlib.util.spec_from_file_location(Path(module).stem, ROOT / module)
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        return script.main
    return importlib.import_module(f"urlkit.{ {'bench': 'bench.cli', 'study': 'study.cli'}.get(module, module)}").main


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", sorted({m for _, m, _ in COMMANDS if m not in HYDRA_APPS}))
def test_every_documented_cli_command_parses(module, monkeypatch):
    """Every flag and positional a page gives ``python -m urlkit.<module>`` is one its parser
    accepts (a renamed or dropped flag shows here); a placeholder may fail a choice."""
    parser, method = _parser_of(_cli_main(module), monkeypatch)

    def refuse(self, message):
        raise ValueError(message)

    monkeypatch.setattr(argparse.ArgumentParser, "error", refuse)
    refused = []
    for where, _, arguments in (command for command in COMMANDS if command[1] == module):
        try:
            getattr(parser, method)(arguments)
        except ValueError as err:
            if PLACEHOLDER not in str(err):
                refused.append(f"{where}: python -m urlkit.{module} {shlex.join(arguments)}: {err}")
    assert not refused, "\n".join(refused)


def _hydra_points(module: str, arguments: list[str]) -> list[str]:
    """The overrides of a documented Hydra command as one run composes them: a sweep's first point."""
    overrides = [a for a in arguments if "=" in a and not a.startswith("-") and PLACEHOLDER not in a and "..." not in a]
    if module == "study":
        profile = next((arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a == "--profile"), "laptop")
        overrides = [f"+profile={'tiny' if '--tiny' in arguments else profile}", *overrides]
    return expand(overrides)[0] if overrides else []


@pytest.mark.timeout(120)
def test_every_documented_override_composes():
    """Every ``key=value`` a page gives ``python -m urlkit.run`` / ``evaluate`` / ``study`` (a sweep:
    its first point) composes in Hydra as that command would: a renamed key or group option
    shows here, not on a user's first try."""
    register_resolvers()
    refused = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for where, module, arguments in COMMANDS:
            if module not in (*HYDRA_APPS, "study"):
                continue
            try:
                compose(config_name=HYDRA_APPS.get(module, "train"), overrides=_hydra_points(module, arguments),
                        return_hydra_config=True)
            except Exception as err:  # noqa: BLE001 - every failure is the finding, named
                refused.append(f"{where}: python -m urlkit.{module} {shlex.join(arguments)}: {err}")
    GlobalHydra.instance().clear()
    assert not refused, "\n".join(refused)


# ---- --help is the first page a user reads of a program -------------------------------------------

CLIS = ["inference", "export", "significance", "findings", "notebooks", "study", "sweeps", "bench",
        "datasets.wordsense", "datasets.manpages", "datasets.emoji", "scripts/gpu_check.py"]


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from _all_parsers(subparser)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", CLIS)
def test_every_cli_help_names_the_command_and_explains_every_option(module, monkeypatch):
    """``--help`` shows the command a user types (``python -m urlkit.<module>``, not a file name),
    a description that is a whole sentence, and a line of help for every argument."""
    parser, _ = _parser_of(_cli_main(module), monkeypatch)
    if not module.startswith("scripts/"):
        assert parser.prog == f"python -m urlkit.{module}"
    assert parser.description and parser.description.rstrip().endswith("."), parser.description
    unexplained = [f"{sub.prog} {action.option_strings or action.dest}"
                   for sub in _all_parsers(parser) for action in sub._actions
                   if not action.help and not isinstance(action, argparse._HelpAction)]
    assert not unexplained, f"arguments without help: {unexplained}"
