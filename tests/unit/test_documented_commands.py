"""Every ``snakepool …`` / ``celery …`` command line the README and docs/ show is one we
really have: parsed by the very click command it names (see :mod:`tests.unit.test_compose`
for how), so a misspelt subcommand or an unknown option fails here, not in a reader's
terminal.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.unit.test_compose import ROOT, check_celery, check_snakepool

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``snakepool …`` / ``celery …`` command line in the docs' shell blocks.

    Lines are joined at a trailing backslash; heredocs are skipped; a command ends at a
    shell operator or a comment. ``snakepool …`` alone is a placeholder, not a command.
    """
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        in_shell, heredoc, pending = False, None, ""
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if heredoc is not None:
                heredoc = None if stripped == heredoc else heredoc
                continue
            if stripped.startswith("```"):
                in_shell = not in_shell and stripped in ("```sh", "```bash", "```console")
                continue
            if not in_shell:
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text, pending = pending + stripped, ""
            if match := re.search(r"<<-?'?(\w+)'?", text):
                heredoc = match[1]
            words = shlex.split(text, comments=True)
            for program in ("snakepool", "celery"):
                if program not in words:
                    continue
                command = words[words.index(program) :]
                end = next((i for i, w in enumerate(command) if w in _SHELL_OPERATORS), None)
                command = command[:end]
                if command[1:] != ["…"]:
                    found.append((f"{path.name}:{number}", command))
    return found


def test_the_docs_show_commands() -> None:
    names = {where.split(":")[0] for where, _ in documented_commands()}
    assert {"README.md", "deploy.md", "runbook-switchover.md", "runbook-rollback.md"} <= names


@pytest.mark.parametrize(
    "command", [c for _, c in documented_commands()], ids=[w for w, _ in documented_commands()]
)
def test_documented_commands_exist_with_these_options(command: list[str]) -> None:
    if command[0] == "snakepool":
        check_snakepool(command)
    else:
        check_celery(command)
