"""An adapter whose import breaks the template's heap filling (as a read-only /tmp, an
odd allocator or a bug would): the template must start and serve all the same."""

from __future__ import annotations

from typing import Any

from snakepool.pool.interpreter import command, prefork


def _broken() -> prefork.Filled:
    raise OSError("No usable temporary directory found")


prefork.fill_free_blocks = _broken  # type: ignore[assignment]


@command(read_only=True)
def hello(args: dict[str, Any]) -> dict[str, Any]:
    """``{}`` → ``{"hello": "world"}``."""
    return {"hello": "world"}
