"""The per-lane circuit breaker: shed a failing lane's traffic to the other lane.

When a lane's recent server-error rate is over the threshold, the router (and the
zero-hop client) sends that lane's traffic to the other lane until a cool-down passes.
Both lanes open is no better than one: then nothing is diverted. The rates come from the
lanes' own metrics (:class:`~snakepool.tasks.rollout.metrics.LaneMetrics`).

A lane with no live node (:class:`~snakepool.tasks.rollout.liveness.LaneLiveness`) is
treated like a lane whose breaker is open (issue 9 item 5), and comes first: its traffic
goes to the other lane while that one has a node, whatever the error rates; and no
traffic is ever shed *to* a lane nobody serves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from snakepool.config import Settings
from snakepool.tasks.rollout.liveness import LaneLiveness, other_lane
from snakepool.tasks.rollout.metrics import LaneMetrics

__all__ = ["BreakerPolicy", "CircuitBreaker"]

log = logging.getLogger("snakepool.breaker")


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
    """Per-lane breakers from the lanes' own metrics (one per router process).

    Args:
        metrics: The lanes' figures.
        policy: When a breaker opens (default :class:`BreakerPolicy`).
        liveness: Which lanes have a live node (None: every lane counts as served).
    """

    def __init__(
        self,
        metrics: LaneMetrics,
        policy: BreakerPolicy | None = None,
        *,
        liveness: LaneLiveness | None = None,
    ) -> None:
        self.metrics = metrics
        self.policy = policy or BreakerPolicy()
        self.liveness = liveness
        self._open_until: dict[str, float] = {}
        self._checked = float("-inf")

    def _refresh(self, now: float) -> None:
        if now - self._checked < self.policy.check_every:
            return
        self._checked = now
        for lane in ("v3", "v2compat"):
            try:
                window = self.metrics.window(lane, self.policy.window_seconds)
            except (redis.RedisError, ValueError) as exc:
                # Observability must never change an outcome: metrics that cannot be read
                # (Redis away, a key holding what we did not write) leave the breaker as it
                # was, rather than failing the request being routed or the heartbeat.
                log.warning("lane %s metrics not read (%s); its breaker stays as it was", lane, exc)
                continue
            requests, failed = window["requests"], window["errors"]
            if requests >= self.policy.min_requests and failed / requests >= self.policy.error_rate:
                self._open_until[lane] = now + self.policy.cooldown_seconds

    def is_open(self, lane: str) -> bool:
        """Whether ``lane`` is shedding its traffic right now."""
        now = time.monotonic()
        self._refresh(now)
        return self._open_until.get(lane, 0.0) > now

    def serves(self, lane: str) -> bool:
        """Whether ``lane`` has a live node (True without a liveness source)."""
        return self.liveness is None or self.liveness.serves(lane)

    def route(self, lane: str) -> str:
        """``lane``, or the other lane while ``lane`` has no live node or its breaker is
        open — never a lane with no live node, and nothing diverted when both are open."""
        other = other_lane(lane)
        if not self.serves(other):
            return lane
        if not self.serves(lane):
            return other
        if self.is_open(lane) and not self.is_open(other):
            return other
        return lane

    def shedding(self) -> dict[str, str]:
        """``{lane: why}`` for each lane whose traffic goes to the other lane right now."""
        return {
            lane: "no live node" if not self.serves(lane) else "breaker open"
            for lane in ("v3", "v2compat")
            if self.route(lane) != lane
        }
