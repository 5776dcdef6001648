"""The default adapter: ``ping``, ``get_stats``, ``echo``, ``calculate``, ``sleep``, and
the program commands (``create_program``, ``execute_program``, ``list_programs``,
``delete_program``, ``get_program_info``, ``configure_lm``, ``dspy_status``).

The program commands run on DSPy when it is installed. Here they import
:mod:`pool.interpreter.dspy_programs` on first use, inside the interpreter, so a default
pool does not pay for DSPy unless it runs programs; for DSPy work, name that adapter
(``ADAPTER=pool.interpreter.dspy_programs``): it is imported in the template, so every
interpreter starts with DSPy already there.
"""

from __future__ import annotations

import math
import time
from types import ModuleType
from typing import Any

from pool.interpreter.adapter import InvalidArguments, command
from pool.interpreter.calc import evaluate
from pool.interpreter.core import get_stats, ping

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
    from pool.interpreter import dspy_programs  # imported on first use: DSPy is heavy

    return dspy_programs


@command()
def create_program(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.create_program`."""
    return _programs().create_program(args)


@command(read_only=True)
def execute_program(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.execute_program`."""
    return _programs().execute_program(args)


@command(read_only=True)
def list_programs(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.list_programs`."""
    return _programs().list_programs(args)


@command()
def delete_program(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.delete_program`."""
    return _programs().delete_program(args)


@command(read_only=True)
def get_program_info(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.get_program_info`."""
    return _programs().get_program_info(args)


@command()
def configure_lm(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.configure_lm`."""
    return _programs().configure_lm(args)


@command(read_only=True)
def dspy_status(args: dict[str, Any]) -> Any:
    """See :func:`pool.interpreter.dspy_programs.dspy_status`."""
    return _programs().dspy_status(args)
