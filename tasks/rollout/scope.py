"""Operation-specific rollout: which commands may go to V3 at all.

Two lists in the flags, both changed from the CLI and audited like every change:

- **exclusions** (``rollout exclude COMMAND`` / ``rollout include COMMAND``): commands
  kept on V2-compat whatever the percentage — an operation-specific rollback when one
  command misbehaves on V3 while the rest of the traffic stays where it is;
- **the V3 allow-list** (``rollout only COMMAND…`` / ``rollout only --all``): when set,
  only these commands may go to V3 ("migrate the read-only operations first").

:func:`~snakepool.tasks.rollout.routing.decide` honours both (an exclusion wins over the
allow-list and over a session's override). Each function here returns the new flags, or
None when the change would change nothing (no audit entry is written for a no-op).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.config.ids import validate_command_name
from snakepool.errors import InvalidArguments

__all__ = ["exclude", "include", "only"]


def exclude(store: FlagStore, command: str, *, who: str, why: str) -> RolloutFlags | None:
    """Keep ``command`` on V2-compat whatever the percentage.

    Returns:
        The new flags, or None if it was already excluded.

    Raises:
        InvalidArguments: a malformed command name, too many exclusions, or the rollout
            is finalized.
    """
    validate_command_name(command)
    if command in store.read().excluded_commands:
        return None
    return store.update(
        lambda f: replace(f, excluded_commands=tuple(sorted({*f.excluded_commands, command}))),
        who=who,
        why=why,
    )


def include(store: FlagStore, command: str, *, who: str, why: str) -> RolloutFlags | None:
    """Undo :func:`exclude`: ``command`` follows the percentage again.

    Returns:
        The new flags, or None if it was not excluded.

    Raises:
        InvalidArguments: a malformed command name, or the rollout is finalized.
    """
    validate_command_name(command)
    if command not in store.read().excluded_commands:
        return None
    return store.update(
        lambda f: replace(
            f, excluded_commands=tuple(c for c in f.excluded_commands if c != command)
        ),
        who=who,
        why=why,
    )


def only(
    store: FlagStore, commands: Iterable[str] | None, *, who: str, why: str
) -> RolloutFlags | None:
    """Set the V3 allow-list: only ``commands`` may go to V3 (None: every command).

    Returns:
        The new flags, or None if the allow-list was already exactly that.

    Raises:
        InvalidArguments: a malformed command name, an empty list (use None for every
            command), too many commands, or the rollout is finalized.
    """
    wanted: tuple[str, ...] | None = None
    if commands is not None:
        wanted = tuple(sorted({validate_command_name(c) for c in commands}))
        if not wanted:
            raise InvalidArguments("name at least one command (or every command: --all)")
    if store.read().v3_commands == wanted:
        return None
    return store.update(lambda f: replace(f, v3_commands=wanted), who=who, why=why)
