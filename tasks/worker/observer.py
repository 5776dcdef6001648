"""Lane observers: a no-op base class whose hooks the lane pipeline calls per request.

What a worker node exports about its requests (Prometheus, :mod:`snakepool.tasks.prometheus`)
hangs here, beside the lane metrics in Redis (:class:`~snakepool.tasks.rollout.metrics.LaneMetrics`)
rather than inside them: the pipeline's :class:`~snakepool.tasks.worker.pipeline.observe.Observe`
step calls :meth:`LaneObserver.on_request`, the shadow step :meth:`LaneObserver.on_shadow`.
A hook that raises is logged and ignored: observing never changes a request's outcome.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LaneObserver"]

log = logging.getLogger("snakepool.observer")


class LaneObserver:
    """Called from the lane thread that served the request; keep hooks quick."""

    def on_request(
        self, lane: str, command: str, seconds: float, error: BaseException | None
    ) -> None:
        """A request finished on ``lane`` (retries included), ``error`` None on success."""

    def on_shadow(self, lane: str, command: str, matched: bool) -> None:
        """This node completed a shadow pair (the second outcome arrived here) and compared."""

    def on_step_failure(self, lane: str, step: str) -> None:
        """A step of the lane pipeline raised (logged; the request's outcome stood)."""

    def safely(self, hook: str, *args: Any) -> None:
        """Call ``hook`` and log (never raise) what it raises."""
        try:
            getattr(self, hook)(*args)
        except Exception:
            log.exception("lane observer hook %s failed", hook)
