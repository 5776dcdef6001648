"""The default adapter: ``ping``, ``get_stats``, ``echo``, ``calculate``, ``sleep``, and
the program commands (``create_program``, ``execute_program``, ``list_programs``,
``delete_program``, ``get_program_info``, ``dspy_status`` and the admin command
``configure_lm``).

The program commands run on DSPy when it is installed. Here they import
:mod:`snakepool.pool.interpreter.dspy_programs` on first use, inside the interpreter, so a default
pool does not pay for DSPy unless it runs programs; for DSPy work, name that adapter
(``ADAPTER=snakepool.pool.interpreter.dspy_programs``): it is imported in the template, so every
interpreter starts with DSPy already there. (That module does not import this one: both
take the general commands from :mod:`~snakepool.pool.interpreter.standard`.)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from snakepool.pool.interpreter.core import get_stats, ping
from snakepool.pool.interpreter.marks import Handler, command
from snakepool.pool.interpreter.standard import MAX_SLEEP_SECONDS, calculate, echo, sleep

__all__ = [
    "MAX_SLEEP_SECONDS", "calculate", "configure_lm", "create_program", "delete_program",
    "dspy_status", "echo", "execute_program", "get_program_info", "get_stats", "list_programs",
    "ping", "sleep",
]  # fmt: skip


def _programs() -> ModuleType:
    from snakepool.pool.interpreter import dspy_programs  # imported on first use: DSPy is heavy

    return dspy_programs


def _on_first_use(name: str, *, read_only: bool, admin: bool = False) -> Handler:
    """A command that forwards to ``dspy_programs.<name>``, importing it when first called."""

    def forward(args: dict[str, Any]) -> Any:
        return getattr(_programs(), name)(args)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"See :func:`snakepool.pool.interpreter.dspy_programs.{name}`."
    return command(name, read_only=read_only, admin=admin)(forward)


create_program = _on_first_use("create_program", read_only=False)
execute_program = _on_first_use("execute_program", read_only=True)
list_programs = _on_first_use("list_programs", read_only=True)
delete_program = _on_first_use("delete_program", read_only=False)
get_program_info = _on_first_use("get_program_info", read_only=True)
configure_lm = _on_first_use("configure_lm", read_only=False, admin=True)
dspy_status = _on_first_use("dspy_status", read_only=True)
