"""Every ``hemascope`` command in the README and docs/ names a command that exists, with options it has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from hemascope.cli import main
from hemascope.data import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.DOTALL)


def commands(page: Path) -> list[str]:
    found = []
    for block in FENCE.findall(page.read_text()):
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.split(" # ")[0].strip()
            for prefix in (".venv/bin/hemascope ", "hemascope "):
                if line.startswith(prefix):
                    found.append(line.removeprefix(prefix))
    return found


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = main
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(click.Context(command), words[0])
        assert sub is not None, f"no command {words[0]!r}"
        command, words = sub, words[1:]
    return command, words


def options_of(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


CASES = [(page.name, line) for page in PAGES for line in commands(page)]


def test_the_pages_hold_commands() -> None:
    pages = {name for name, _ in CASES}
    assert {"README.md", "gateway.md", "services.md", "training.md"} <= pages


@pytest.mark.parametrize(("page", "line"), CASES)
def test_every_documented_command_and_option_exists(page: str, line: str) -> None:
    words = [word.strip("[]") for word in shlex.split(line)]
    command, rest = resolve(words)
    known = options_of(command)
    used = {word.split("=")[0] for word in rest if word.startswith("--")}
    assert used <= known, f"{page}: {line!r}: unknown {sorted(used - known)}"
