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
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snakepool.pool.interpreter import core
from snakepool.pool.interpreter.marks import MARK, Adapter, CommandSpec, Handler, command

__all__ = [
    "ADMIN_ENV",
    "Adapter",
    "CommandSpec",
    "CommandTable",
    "Handler",
    "admin_commands_allowed",
    "command",
    "load_adapter",
]

#: Set to ``1`` by the pool when its ``ALLOW_ADMIN_COMMANDS`` setting is on.
ADMIN_ENV = "SNAKEPOOL_ALLOW_ADMIN_COMMANDS"


def admin_commands_allowed() -> bool:
    """Whether this interpreter may run ``admin`` commands (read from its environment)."""
    return os.environ.get(ADMIN_ENV) == "1"


@dataclass(frozen=True)
class CommandTable:
    """The loaded adapter: command name → (spec, handler).

    ``disabled`` maps the admin commands that are switched off to the reason, which
    the interpreter sends back (as ``UnknownCommand``) to whoever calls one.
    """

    adapter: str
    specs: dict[str, CommandSpec]
    handlers: dict[str, Handler]
    setup: Callable[[], None]
    disabled: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, dict[str, bool]]:
        """Every available command's flags, for the handshake."""
        return {name: spec.describe() for name, spec in self.specs.items()}


def _collect(namespace: dict[str, Any] | Any) -> dict[str, tuple[CommandSpec, Handler]]:
    found: dict[str, tuple[CommandSpec, Handler]] = {}
    members = namespace.items() if isinstance(namespace, dict) else inspect.getmembers(namespace)
    for _, value in members:
        spec = getattr(value, MARK, None)
        if isinstance(spec, CommandSpec) and callable(value):
            found[spec.name] = (spec, value)
    return found


def load_adapter(path: str, *, allow_admin: bool | None = None) -> CommandTable:
    """Import the adapter at ``path`` and build its command table.

    ``ping`` and ``get_stats`` are always present, whatever the adapter.

    Args:
        path: Dotted path of the adapter module, or ``module.AdapterClass``.
        allow_admin: Whether ``admin`` commands are available; default: the
            ``SNAKEPOOL_ALLOW_ADMIN_COMMANDS`` environment variable the pool sets.

    Raises:
        ImportError: the module or class cannot be found.
        TypeError: the path names something that is not an adapter.
    """
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
    if allow_admin is None:
        allow_admin = admin_commands_allowed()
    disabled = {
        name: (
            f"{name!r} changes the interpreter's configuration and is off: enable it with "
            f"the ALLOW_ADMIN_COMMANDS setting ({ADMIN_ENV}=1)"
        )
        for name, (spec, _) in commands.items()
        if spec.admin and not allow_admin
    }
    available = {name: entry for name, entry in commands.items() if name not in disabled}
    return CommandTable(
        adapter=path,
        specs={name: spec for name, (spec, _) in available.items()},
        handlers={name: handler for name, (_, handler) in available.items()},
        setup=setup,
        disabled=disabled,
    )
