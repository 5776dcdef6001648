"""Adapters: what an interpreter can do, declared with ``@command``.

An adapter is named by a dotted path. It is either a module whose functions are marked
with :func:`command` (functions it imports from another adapter count too, so adapters
compose), or an :class:`Adapter` subclass (``package.module.ClassName``) whose methods
are marked; the class is instantiated once per interpreter process.

Commands take the args dict and return a JSON-able value. To reject a request, raise
one of :mod:`snakepool.errors` (``InvalidArguments``, ``ProgramNotFound``, …): the caller
gets the same class with the same data. Any other exception becomes ``CommandFailed``
with the remote traceback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Adapter", "CommandSpec", "CommandTable", "command", "load_adapter"]

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[dict[str, Any]], Any]

_MARK = "__snakepool_command__"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """How a command may be treated by routing and retries."""

    name: str
    read_only: bool = False
    idempotent: bool = False

    def describe(self) -> dict[str, bool]:
        """The flags as sent in the readiness handshake."""
        return {"read_only": self.read_only, "idempotent": self.idempotent}


def command(
    name: str | None = None, *, read_only: bool = False, idempotent: bool | None = None
) -> Callable[[F], F]:
    """Mark a function (or an :class:`Adapter` method) as a command.

    Args:
        name: Command name; defaults to the function's name.
        read_only: The command changes no state (eligible for shadow traffic).
        idempotent: Running it twice is harmless (eligible for retries); defaults to
            ``read_only``.
    """

    def mark(fn: F) -> F:
        spec = CommandSpec(
            name or fn.__name__, read_only, read_only if idempotent is None else idempotent
        )
        setattr(fn, _MARK, spec)
        return fn

    return mark


class Adapter:
    """Base class for adapters that keep state per interpreter.

    Subclasses mark methods with :func:`command`. :meth:`setup` runs in every
    interpreter after it is forked (or spawned), before the readiness handshake.
    """

    def setup(self) -> None:
        """Per-interpreter initialisation (reseed, open files, warm caches)."""


@dataclass(frozen=True)
class CommandTable:
    """The loaded adapter: command name → (spec, handler)."""

    adapter: str
    specs: dict[str, CommandSpec]
    handlers: dict[str, Handler]
    setup: Callable[[], None]

    def describe(self) -> dict[str, dict[str, bool]]:
        """Every command's flags, for the handshake."""
        return {name: spec.describe() for name, spec in self.specs.items()}


def _collect(namespace: dict[str, Any] | Any) -> dict[str, tuple[CommandSpec, Handler]]:
    found: dict[str, tuple[CommandSpec, Handler]] = {}
    members = namespace.items() if isinstance(namespace, dict) else inspect.getmembers(namespace)
    for _, value in members:
        spec = getattr(value, _MARK, None)
        if isinstance(spec, CommandSpec) and callable(value):
            found[spec.name] = (spec, value)
    return found


def load_adapter(path: str) -> CommandTable:
    """Import the adapter at ``path`` and build its command table.

    ``ping`` and ``get_stats`` are always present, whatever the adapter.

    Raises:
        ImportError: the module or class cannot be found.
        TypeError: the path names something that is not an adapter.
    """
    from snakepool.pool.interpreter import core  # the always-present commands

    try:
        module = importlib.import_module(path)
        target: Any = module
        found = _collect(vars(module))
        setup: Callable[[], None] = lambda: None  # noqa: E731
    except ModuleNotFoundError as exc:
        # Maybe ``package.module.ClassName``; only if the parent module exists.
        module_name, _, attr = path.rpartition(".")
        if not module_name or exc.name not in (path, None):
            raise
        module = importlib.import_module(module_name)
        target = getattr(module, attr, None)
        if target is None:
            raise
        if not (inspect.isclass(target) and issubclass(target, Adapter)):
            raise TypeError(f"{path!r} is neither a module nor an Adapter subclass") from None
        instance = target()
        found = _collect(instance)
        setup = instance.setup
    commands = _collect(vars(core))
    commands.update(found)
    if not found:
        raise TypeError(f"adapter {path!r} defines no @command functions ({target!r})")
    return CommandTable(
        adapter=path,
        specs={name: spec for name, (spec, _) in commands.items()},
        handlers={name: handler for name, (_, handler) in commands.items()},
        setup=setup,
    )
