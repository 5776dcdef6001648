"""When an interpreter has served long enough: request count, resident memory, age.

Recycling is planned (a clean exit on EOF, then a fresh fork of the template), so it
never counts against the restart intensity.
"""

from __future__ import annotations

import time

from snakepool.config.settings import PoolSettings
from snakepool.pool.worker import Interpreter

__all__ = ["RecyclePolicy"]


class RecyclePolicy:
    """``MAX_REQUESTS_PER_WORKER``, ``MAX_WORKER_RSS_MB`` and ``max_worker_age`` (0: off).

    Args:
        settings: The pool's settings.
    """

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        # Checked after every request: with every limit off, cost nothing.
        self.enabled = bool(
            settings.max_requests_per_worker
            or settings.max_worker_age
            or settings.max_worker_rss_mb
        )

    def reason(self, interpreter: Interpreter) -> str | None:
        """Why ``interpreter`` should be recycled now, or None."""
        if not self.enabled:
            return None
        s = self.settings
        if s.max_requests_per_worker and interpreter.requests >= s.max_requests_per_worker:
            return f"served {interpreter.requests} requests (max_requests_per_worker)"
        if s.max_worker_age and interpreter.ready_at is not None:
            age = time.monotonic() - interpreter.ready_at
            if age >= s.max_worker_age:
                return f"{age:.0f}s old (max_worker_age={s.max_worker_age:g})"
        if s.max_worker_rss_mb:
            rss = interpreter.rss_bytes()
            if rss is not None and rss > s.max_worker_rss_mb * 1024 * 1024:
                return f"RSS {rss / 2**20:.0f} MB over max_worker_rss_mb={s.max_worker_rss_mb}"
        return None
