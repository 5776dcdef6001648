"""Retries, V2's error classification, and the per-lane circuit breaker.

- **Retries** happen inside the lane task, with exponential back-off, and only when both
  hold: the error is ``retryable`` (the interpreter crashed, the pool was saturated or
  unavailable) and the command is ``idempotent`` — running it twice must be harmless.
- **V2 classification**: errors raised on the V2-compat lane also carry the fields V2
  callers branch on — ``v2_category``, ``severity``, ``retry_strategy``.
- **Circuit breaker**: when a lane's recent server-error rate is over the threshold, the
  router (and the zero-hop client) sends that lane's traffic to the other lane until a
  cool-down passes. Both lanes open is no better than one: then nothing is diverted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from snakepool import errors
from snakepool.config import Settings
from snakepool.tasks.rollout.metrics import LaneMetrics

__all__ = [
    "MAX_RETRIES",
    "CircuitBreaker",
    "classify_v2",
    "retry_delay",
    "should_retry",
]

#: Attempts after the first, for idempotent commands with retryable errors.
MAX_RETRIES = 3
#: First retry delay in seconds (doubled each time, capped at 5 s).
RETRY_BASE_SECONDS = 0.1

# V2's classification: error type → (category, severity, retry strategy).
_V2_CLASSES: dict[str, tuple[str, str, str]] = {
    "QueueFull": ("resource_exhausted", "warning", "retry_with_backoff"),
    "QueueTimeout": ("resource_exhausted", "warning", "retry_with_backoff"),
    "PoolUnavailable": ("service_unavailable", "critical", "retry_with_backoff"),
    "WorkerCrashed": ("worker_failure", "error", "retry_immediately"),
    "RequestTimeout": ("timeout", "error", "retry_if_idempotent"),
    "CommandFailed": ("execution_error", "error", "do_not_retry"),
    "UnknownCommand": ("validation_error", "info", "do_not_retry"),
    "InvalidArguments": ("validation_error", "info", "do_not_retry"),
    "PayloadTooLarge": ("validation_error", "info", "do_not_retry"),
    "SessionNotFound": ("not_found", "info", "do_not_retry"),
    "ProgramNotFound": ("not_found", "info", "do_not_retry"),
    "ConfigError": ("configuration_error", "critical", "do_not_retry"),
}


def classify_v2(error: errors.SnakepoolError) -> errors.SnakepoolError:
    """Add V2's classification fields to ``error`` (in place; returned for chaining)."""
    category, severity, strategy = _V2_CLASSES.get(
        type(error).__name__, ("internal_error", "error", "do_not_retry")
    )
    error.data.update(v2_category=category, severity=severity, retry_strategy=strategy)
    return error


def should_retry(error: BaseException, *, idempotent: bool, attempt: int) -> bool:
    """Whether attempt number ``attempt`` (0 = the first) may be retried."""
    return (
        idempotent
        and attempt < MAX_RETRIES
        and isinstance(error, errors.SnakepoolError)
        and error.retryable
    )


def retry_delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1``."""
    return float(min(5.0, RETRY_BASE_SECONDS * 2**attempt))


@dataclass(frozen=True)
class BreakerPolicy:
    """When a lane's breaker opens."""

    #: Seconds of metrics looked at.
    window_seconds: int = 10
    #: Requests needed in the window before judging.
    min_requests: int = 20
    #: Server-error rate that opens the breaker.
    error_rate: float = 0.5
    #: Seconds the breaker stays open before the lane gets traffic again.
    cooldown_seconds: float = 15.0
    #: Seconds between reads of the metrics (the check is on the routing hot path).
    check_every: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        """The policy named by the ``BREAKER_*`` settings."""
        return cls(
            window_seconds=settings.breaker_window,
            min_requests=settings.breaker_min_requests,
            error_rate=settings.breaker_error_rate,
            cooldown_seconds=settings.breaker_cooldown,
        )


class CircuitBreaker:
    """Per-lane breakers from the lanes' own metrics (one per router process)."""

    def __init__(self, metrics: LaneMetrics, policy: BreakerPolicy | None = None) -> None:
        self.metrics = metrics
        self.policy = policy or BreakerPolicy()
        self._open_until: dict[str, float] = {}
        self._checked = float("-inf")

    def _refresh(self, now: float) -> None:
        if now - self._checked < self.policy.check_every:
            return
        self._checked = now
        for lane in ("v3", "v2compat"):
            window = self.metrics.window(lane, self.policy.window_seconds)
            requests, failed = window["requests"], window["errors"]
            if requests >= self.policy.min_requests and failed / requests >= self.policy.error_rate:
                self._open_until[lane] = now + self.policy.cooldown_seconds

    def is_open(self, lane: str) -> bool:
        """Whether ``lane`` is shedding its traffic right now."""
        now = time.monotonic()
        self._refresh(now)
        return self._open_until.get(lane, 0.0) > now

    def route(self, lane: str) -> str:
        """``lane``, or the other lane while ``lane``'s breaker is open (and the other's isn't)."""
        other = "v2compat" if lane == "v3" else "v3"
        if self.is_open(lane) and not self.is_open(other):
            return other
        return lane
