"""The general-purpose commands every shipped adapter includes: ``echo``, ``calculate``,
``sleep``.

A module of its own, below the adapters that re-export them (the default adapter
:mod:`~snakepool.pool.interpreter.builtin`, the DSPy adapter, the chaos adapter), so
no adapter has to import another.
"""

from __future__ import annotations

import math
import time
from typing import Any

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.calc import evaluate
from snakepool.pool.interpreter.marks import command

__all__ = ["MAX_SLEEP_SECONDS", "calculate", "echo", "sleep"]

#: Longest ``sleep`` accepted, in seconds.
MAX_SLEEP_SECONDS = 3600.0


@command(read_only=True)
def echo(args: dict[str, Any]) -> dict[str, Any]:
    """Return the arguments unchanged."""
    return args


@command(read_only=True)
def calculate(args: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``{"expression": "2 + 3 * 4"}`` safely (no ``eval``): ``{"result": 14}``.

    Integers are exact at any size the calculator allows (see
    :data:`~snakepool.pool.interpreter.calc.MAX_INT_BITS`): ``2**64`` is
    ``18446744073709551616``, not a float.
    """
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
