"""A read-only command that reports when it ran (shadow tests: did the copy wait?)."""

import time
from typing import Any

from snakepool.pool.interpreter import command


@command(read_only=True)
def span(args: dict[str, Any]) -> dict[str, int]:
    """Sleep ``args["seconds"]`` (at most 1 s); ``{"started": µs, "ended": µs}`` since the
    epoch, as integers (compared exactly, where a float timestamp is within the
    comparator's relative tolerance of any other)."""
    started = time.time_ns() // 1000
    time.sleep(min(float(args.get("seconds", 0.05)), 1.0))
    return {"started": started, "ended": time.time_ns() // 1000}
