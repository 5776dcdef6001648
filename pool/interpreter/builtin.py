"""The default adapter: ``ping``, ``get_stats``, ``echo``, ``calculate``, ``sleep``, and
the program commands (``create_program``, ``execute_program``, ``list_programs``,
``delete_program``, ``get_program_info``, ``configure_lm``, ``dspy_status``).

The program commands run on DSPy when it is installed. Here they import
:mod:`snakepool.pool.interpreter.dspy_programs` on first use, inside the interpreter, so a default
pool does not pay for DSPy unless it runs programs; for DSPy work, name that adapter
(``ADAPTER=snakepool.pool.interpreter.dspy_programs``): it is imported in the template, so every
interpreter starts with DSPy already there.
"""

from __future__ import annotations

import math
import time
from types import ModuleType
from typing import Any

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.adapter import Handler, command
from snakepool.pool.interpreter.calc import evaluate
from snakepool.pool.interpreter.core import get_stats, ping

__all__ = [
    "calculate", "configure_lm", "create_program", "delete_program", "dspy_status", "echo",
    "execute_program", "get_program_info", "get_stats", "list_programs", "ping", "sleep",
]  # fmt: skip

#: Longest ``sleep`` accepted, in seconds.
MAX_SLEEP_SECONDS = 3600.0


@command(read_only=True)
def echo(args: dict[str, Any]) -> dict[str, Any]:
    """Return the arguments unchanged."""
    return args


@command(read_only=True)
def calculate(args: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``{"expression": "2 + 3 * 4"}`` safely (no ``eval``): ``{"result": 14}``."""
    expression = args.get("expression")
    if not isinstance(expression, str):
        raise InvalidArguments("calculate needs 'expression' as a string")
    return {"result": evaluate(expression)}


@command(read_only=True)
def sleep(args: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``{"seconds": s}`` (0 to 3600) and report how long it slept."""
    seconds = args.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArguments("sleep needs 'seconds' as a number")
    if not (0 <= seconds <= MAX_SLEEP_SECONDS) or math.isnan(seconds):
        raise InvalidArguments(f"'seconds' must be between 0 and {MAX_SLEEP_SECONDS:g}")
    started = time.monotonic()
    time.sleep(seconds)
    return {"slept": round(time.monotonic() - started, 6)}


def _programs() -> ModuleType:
    from snakepool.pool.interpreter import dspy_programs  # imported on first use: DSPy is heavy

    return dspy_programs


def _on_first_use(name: str, *, read_only: bool) -> Handler:
    """A command that forwards to ``dspy_programs.<name>``, importing it when first called."""

    def forward(args: dict[str, Any]) -> Any:
        return getattr(_programs(), name)(args)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"See :func:`snakepool.pool.interpreter.dspy_programs.{name}`."
    return command(name, read_only=read_only)(forward)


create_program = _on_first_use("create_program", read_only=False)
execute_program = _on_first_use("execute_program", read_only=True)
list_programs = _on_first_use("list_programs", read_only=True)
delete_program = _on_first_use("delete_program", read_only=False)
get_program_info = _on_first_use("get_program_info", read_only=True)
configure_lm = _on_first_use("configure_lm", read_only=False)
dspy_status = _on_first_use("dspy_status", read_only=True)
