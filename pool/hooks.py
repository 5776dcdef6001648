"""Observers: a no-op base class whose methods the pool calls as things happen.

Subclass and override what you need (metrics, events, benchmarks). A hook that raises
is logged and ignored: observing must never break serving.
"""

from __future__ import annotations

import logging
from typing import Any

from snakepool.errors import SnakepoolError

__all__ = ["PoolObserver"]

log = logging.getLogger("snakepool.pool.hooks")


class PoolObserver:
    """Called from the thread where the event happens; keep hooks quick."""

    def on_request(self, command: str, seconds: float, error: SnakepoolError | None) -> None:
        """A request finished (``error`` is None on success)."""

    def on_interpreter_ready(self, pid: int, seq: int, startup_seconds: float) -> None:
        """An interpreter passed its readiness handshake."""

    def on_interpreter_lost(self, pid: int | None, error: SnakepoolError) -> None:
        """An interpreter crashed, timed out or failed a health check."""

    def on_interpreter_exit(self, pid: int, exit_code: int | None, signal: int | None) -> None:
        """The template reported an interpreter's exit."""

    def on_unavailable(self, retry_after: float) -> None:
        """Restart intensity exceeded: the pool backs off for ``retry_after`` seconds."""

    def safely(self, hook: str, *args: Any) -> None:
        """Call ``hook`` and log (never raise) what it raises."""
        try:
            getattr(self, hook)(*args)
        except Exception:
            log.exception("observer hook %s failed", hook)
