"""Per-lane metrics in Redis: counters, recent latencies, and per-second windows.

Each lane task records one entry per request in one pipeline (a few tens of µs). Client
errors (the request's own fault) are counted apart and never in a lane's error rate;
every other failure is a server error — an exception that is not a
:class:`~snakepool.errors.SnakepoolError` (a bug, a Redis error) included. Each failure
is also counted by its type. ``snakepool status``, the circuit breaker and the rollout
controller read them back.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from snakepool.config.keys import DEFAULT_PREFIX, Keys
from snakepool.errors import SnakepoolError

__all__ = ["ERROR_TYPE_FIELD", "LaneMetrics"]

#: Latencies kept per lane for percentiles.
LATENCY_SAMPLES = 1000
#: Seconds a per-second window is kept.
WINDOW_TTL = 600
#: Field of the lane's counters hash counting failures of one type: ``error_type:<name>``.
#: Bounded: the names are exception classes, defined by code.
ERROR_TYPE_FIELD = "error_type:"


class LaneMetrics:
    """Record and read lane figures.

    Args:
        client: redis-py client.
        prefix: Key prefix.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def record(
        self, lane: str, seconds: float, error: BaseException | None, *, shadow_copy: bool = False
    ) -> None:
        """Count one finished request.

        Args:
            lane: ``v3`` or ``v2compat``.
            seconds: How long the request took.
            error: What it failed with (any exception), or None for a success. A client
                error (``category == "client"``) is counted apart; anything else —
                whatever its class — is a server error.
            shadow_copy: It was the fire-and-forget copy of a shadowed request: counted
                like any request (it is real work on the lane) and also under
                ``shadow_copies``, so the traffic routed to each lane can be told apart.

        Raises:
            redis.RedisError: the figures could not be written.
        """
        client_error = isinstance(error, SnakepoolError) and error.is_client_error
        server_error = error is not None and not client_error
        counters = self.keys.lane_metrics(lane)
        window = self.keys.lane_window(lane, int(time.time()))
        ms = round(seconds * 1000, 3)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(counters, "requests", 1)
            pipe.hincrby(window, "requests", 1)
            if server_error:
                pipe.hincrby(counters, "errors", 1)
                pipe.hincrby(window, "errors", 1)
            if client_error:
                pipe.hincrby(counters, "client_errors", 1)
            if error is not None:
                pipe.hincrby(counters, f"{ERROR_TYPE_FIELD}{type(error).__name__}", 1)
            if shadow_copy:
                pipe.hincrby(counters, "shadow_copies", 1)
            pipe.hincrbyfloat(window, "ms_total", ms)
            pipe.expire(window, WINDOW_TTL)
            pipe.lpush(self.keys.lane_latencies(lane), ms)
            pipe.ltrim(self.keys.lane_latencies(lane), 0, LATENCY_SAMPLES - 1)
            pipe.execute()

    def summary(self, lane: str) -> dict[str, Any]:
        """Totals, failures by type and latency percentiles (ms) of the recent samples.

        Shape: ``{"requests", "errors", "client_errors", "shadow_copies", "error_types":
        {name: count}, "p50_ms", "p95_ms", "p99_ms"}`` (percentiles None without samples;
        ``requests`` includes the ``shadow_copies``).
        """
        raw = self.client.hgetall(self.keys.lane_metrics(lane))
        counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        samples = sorted(
            float(v) for v in self.client.lrange(self.keys.lane_latencies(lane), 0, -1)
        )
        return {
            "requests": counts.get("requests", 0),
            "errors": counts.get("errors", 0),
            "client_errors": counts.get("client_errors", 0),
            "shadow_copies": counts.get("shadow_copies", 0),
            "error_types": {
                name.removeprefix(ERROR_TYPE_FIELD): count
                for name, count in sorted(counts.items())
                if name.startswith(ERROR_TYPE_FIELD)
            },
            "p50_ms": _percentile(samples, 0.50),
            "p95_ms": _percentile(samples, 0.95),
            "p99_ms": _percentile(samples, 0.99),
        }

    def window(self, lane: str, seconds: int) -> dict[str, int]:
        """Requests and (server) errors over the last ``seconds`` seconds."""
        now = int(time.time())
        with self.client.pipeline(transaction=False) as pipe:
            for second in range(now - seconds + 1, now + 1):
                pipe.hmget(self.keys.lane_window(lane, second), "requests", "errors")
            rows = pipe.execute()
        return {
            "requests": sum(int(r[0] or 0) for r in rows),
            "errors": sum(int(r[1] or 0) for r in rows),
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
