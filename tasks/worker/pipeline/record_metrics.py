"""Recording each request in its lane's metrics (what the breaker and controller judge by)."""

from __future__ import annotations

import time

from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["RecordMetrics"]


class RecordMetrics(LaneStep):
    """Counts every finished request once, retries included, with its whole latency.

    Any exception is a failure here: a client error is counted apart, everything else
    (a non-snakepool exception too) as a server error, and each by its type.
    """

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Record the request (a Redis error here is the pipeline's to log, not the caller's).

        The figures are sent now, ahead of the result; Redis's replies are read once the
        result is out (``call.after_result``), so the request never waits for them.
        """
        metrics = call.node.metrics
        call.after_result.append(("RecordMetrics.after", metrics.collect))
        metrics.record(
            call.lane,
            time.perf_counter() - call.started,
            outcome.error,
            shadow_copy=call.is_shadow_copy,
        )
        return None
