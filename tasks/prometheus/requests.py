"""Per-request metrics: updated by the lane pipeline as each request finishes.

``snakepool_requests_total{lane, command, outcome, error_type}`` — ``outcome`` is ``ok``,
``client_error`` (the request's own fault: never a lane's error rate) or
``server_error``; ``error_type`` the exception's class (empty for ``ok``). The
``command`` label only takes the commands the node's adapter declares; anything else a
caller sends is ``other``, so no caller can grow the series without bound.
``snakepool_request_duration_seconds{lane}`` — the whole request, retries included.
``snakepool_shadow_comparisons_total{lane, result}`` — shadow pairs this node compared.
``snakepool_lane_step_failures_total{lane, step}`` — a pipeline step that raised (a Redis
error recording metrics or a shadow outcome, a bug): logged, the outcome unchanged.

:class:`PoolEvents` counts interpreter starts (``snakepool_interpreter_starts_total``)
from the pool's own observer hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Histogram

from snakepool.errors import SnakepoolError
from snakepool.pool.hooks import PoolObserver
from snakepool.tasks.worker.observer import LaneObserver

__all__ = ["DURATION_BUCKETS", "OTHER_COMMAND", "PoolEvents", "RequestMetrics", "outcome_of"]

#: The ``command`` label of every command the adapter does not declare.
OTHER_COMMAND = "other"
#: Request duration buckets, in seconds: from a warm ping to a long DSPy program.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Longest ``error_type`` label (class names are bounded by the code; this bounds size).
_MAX_TYPE_CHARS = 64


def outcome_of(error: BaseException | None) -> tuple[str, str]:
    """``(outcome, error_type)`` labels for a request that ended with ``error``.

    A client error (``category == "client"``) is ``client_error``; anything else that is
    not None — whatever its class — ``server_error``, as the lane metrics count it.
    """
    if error is None:
        return "ok", ""
    kind = type(error).__name__[:_MAX_TYPE_CHARS]
    if isinstance(error, SnakepoolError) and error.is_client_error:
        return "client_error", kind
    return "server_error", kind


class RequestMetrics(LaneObserver):
    """The lane observer that counts requests for Prometheus.

    Args:
        registry: Where the metrics are registered (one per node).
        declared: The adapter's command names (read until it answers some).
    """

    def __init__(
        self, registry: CollectorRegistry, *, declared: Callable[[], Collection[str]]
    ) -> None:
        self._declared = declared
        self._commands: frozenset[str] = frozenset()
        self.requests = Counter(
            "snakepool_requests",
            "Requests finished, by lane, command (declared by the adapter, else 'other'), "
            "outcome (ok, client_error, server_error) and error type.",
            ("lane", "command", "outcome", "error_type"),
            registry=registry,
        )
        self.duration = Histogram(
            "snakepool_request_duration_seconds",
            "Seconds from a request entering the lane to its final outcome (retries included).",
            ("lane",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.shadow = Counter(
            "snakepool_shadow_comparisons",
            "Shadow pairs this node compared (it received the second outcome), by result.",
            ("lane", "result"),
            registry=registry,
        )

        self.step_failures = Counter(
            "snakepool_lane_step_failures",
            "Lane pipeline steps that raised, by lane and step (logged; outcomes unchanged).",
            ("lane", "step"),
            registry=registry,
        )

    def command_label(self, command: str) -> str:
        """``command`` if the adapter declares it, else :data:`OTHER_COMMAND`."""
        if not self._commands:
            self._commands = frozenset(self._declared())
        return command if command in self._commands else OTHER_COMMAND

    def on_request(
        self, lane: str, command: str, seconds: float, error: BaseException | None
    ) -> None:
        """Count the request and observe its duration."""
        outcome, error_type = outcome_of(error)
        self.requests.labels(lane, self.command_label(command), outcome, error_type).inc()
        self.duration.labels(lane).observe(seconds)

    def on_shadow(self, lane: str, command: str, matched: bool) -> None:
        """Count one comparison."""
        self.shadow.labels(lane, "matched" if matched else "mismatched").inc()

    def on_step_failure(self, lane: str, step: str) -> None:
        """Count one failure of a pipeline step."""
        self.step_failures.labels(lane, step).inc()


class PoolEvents(PoolObserver):
    """Counts the pool's interpreter starts (a pool observer: called by its supervisor)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts = 0

    @property
    def starts(self) -> int:
        """Interpreters that passed their readiness handshake so far."""
        with self._lock:
            return self._starts

    def on_interpreter_ready(self, pid: int, seq: int, startup_seconds: float) -> None:
        """Count one start."""
        with self._lock:
            self._starts += 1
