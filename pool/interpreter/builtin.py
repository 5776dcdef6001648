"""The default adapter: ``ping``, ``get_stats``, ``echo``, ``calculate``, ``sleep``."""

from __future__ import annotations

import math
import time
from typing import Any

from pool.interpreter.adapter import InvalidArguments, command
from pool.interpreter.calc import evaluate
from pool.interpreter.core import get_stats, ping

__all__ = ["calculate", "echo", "get_stats", "ping", "sleep"]

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
