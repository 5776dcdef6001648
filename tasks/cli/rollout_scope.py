"""``snakepool rollout exclude|include|only``: which commands may go to V3 (audited)."""

from __future__ import annotations

from typing import Any

import click

from snakepool.tasks.cli._common import console, fails_cleanly, make_client, settings_with
from snakepool.tasks.cli._params import REASON

__all__ = ["rollout_exclude", "rollout_include", "rollout_only"]


def _lists(flags: Any) -> str:
    excluded = ", ".join(flags.excluded_commands) or "none"
    allowed = "every command" if flags.v3_commands is None else ", ".join(flags.v3_commands)
    return f"excluded from V3: {excluded}; allowed on V3: {allowed}"


@click.command("exclude")
@click.argument("command")
@REASON
@fails_cleanly
def rollout_exclude(command: str, reason: str) -> None:
    """Keep COMMAND on V2-compat whatever the percentage (operation-specific rollback)."""
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.rollout.scope import exclude

    store = make_client(settings_with()).flags
    flags = exclude(store, command, who=operator_name(), why=reason)
    if flags is None:
        console.print(f"{command} was already excluded (nothing changed)")
        flags = store.read()
    else:
        console.print(
            f"{command} stays on V2-compat whatever the percentage (version {flags.version})"
        )
    console.print(_lists(flags))


@click.command("include")
@click.argument("command")
@REASON
@fails_cleanly
def rollout_include(command: str, reason: str) -> None:
    """Undo `rollout exclude`: COMMAND follows the percentage again."""
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.rollout.scope import include

    store = make_client(settings_with()).flags
    flags = include(store, command, who=operator_name(), why=reason)
    if flags is None:
        console.print(f"{command} was not excluded (nothing changed)")
        flags = store.read()
    else:
        console.print(f"{command} follows the percentage again (version {flags.version})")
    console.print(_lists(flags))


@click.command("only")
@click.argument("commands", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every command may go to V3 (the default).")
@REASON
@fails_cleanly
def rollout_only(commands: tuple[str, ...], every: bool, reason: str) -> None:
    """Let only COMMANDS go to V3 (e.g. the read-only ones first); --all: every command."""
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.rollout.scope import only

    if every == bool(commands):
        raise click.UsageError("name the commands allowed on V3, or --all (not both)")
    store = make_client(settings_with()).flags
    flags = only(store, None if every else commands, who=operator_name(), why=reason)
    if flags is None:
        console.print("the V3 allow-list was already that (nothing changed)")
        flags = store.read()
    else:
        console.print(f"V3 allow-list set (version {flags.version})")
    console.print(_lists(flags))
