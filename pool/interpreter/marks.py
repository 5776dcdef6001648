"""How an adapter declares its commands: the :func:`command` mark and the :class:`Adapter` base.

The lowest module of the interpreter side: the always-present commands
(:mod:`~snakepool.pool.interpreter.core`), the adapters and the loader
(:mod:`~snakepool.pool.interpreter.adapter`) all import it, and it imports nothing of
the project, so none of them import each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["MARK", "Adapter", "CommandSpec", "Handler", "command"]

F = TypeVar("F", bound=Callable[..., Any])
#: A command's handler: the args dict in, a JSON-able value out.
Handler = Callable[[dict[str, Any]], Any]

#: The attribute :func:`command` sets on a handler.
MARK = "__snakepool_command__"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """How a command may be treated by routing, retries and the interpreter.

    ``admin`` commands change the interpreter's own configuration (which LM it calls,
    with which credentials); they are off unless the pool enables them
    (``ALLOW_ADMIN_COMMANDS``).
    """

    name: str
    read_only: bool = False
    idempotent: bool = False
    admin: bool = False

    def describe(self) -> dict[str, bool]:
        """The flags as sent in the readiness handshake."""
        return {"read_only": self.read_only, "idempotent": self.idempotent}


def command(
    name: str | None = None,
    *,
    read_only: bool = False,
    idempotent: bool | None = None,
    admin: bool = False,
) -> Callable[[F], F]:
    """Mark a function (or an :class:`Adapter` method) as a command.

    Args:
        name: Command name; defaults to the function's name.
        read_only: The command changes no state (eligible for shadow traffic).
        idempotent: Running it twice is harmless (eligible for retries); defaults to
            ``read_only``.
        admin: It changes the interpreter's configuration: available only when the
            pool's ``ALLOW_ADMIN_COMMANDS`` setting is on.
    """

    def mark(fn: F) -> F:
        spec = CommandSpec(
            name or fn.__name__,
            read_only,
            read_only if idempotent is None else idempotent,
            admin,
        )
        setattr(fn, MARK, spec)
        return fn

    return mark


class Adapter:
    """Base class for adapters that keep state per interpreter.

    Subclasses mark methods with :func:`command`. :meth:`setup` runs in every
    interpreter after it is forked (or spawned), before the readiness handshake.
    """

    def setup(self) -> None:
        """Per-interpreter initialisation (reseed, open files, warm caches)."""
