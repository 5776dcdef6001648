"""Telling the node's lane observer about each finished request (Prometheus, …)."""

from __future__ import annotations

import time

from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["Observe"]


class Observe(LaneStep):
    """Calls ``node.observer.on_request`` once per request, with its final outcome and
    whole latency (it sits next to :class:`RecordMetrics`, inside the retries)."""

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Report the request (the observer's own failures are logged by ``safely``)."""
        command = call.command if isinstance(call.command, str) else ""
        seconds = time.perf_counter() - call.started
        call.node.observer.safely("on_request", call.lane, command, seconds, outcome.error)
        return None
