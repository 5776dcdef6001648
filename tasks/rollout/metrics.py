"""Per-lane metrics in Redis: counters, per-second windows, and timed latency samples.

Each lane task records one entry per request in one pipeline (a few tens of µs). Client
errors (the request's own fault) are counted apart and never in a lane's error rate;
every other failure is a server error — an exception that is not a
:class:`~snakepool.errors.SnakepoolError` (a bug, a Redis error) included. Each failure
is also counted by its type. ``snakepool status``, the circuit breaker and the rollout
controller read them back.

Three stores, one time axis (the writer's clock when the request finished):

- ``metrics:<lane>``: counters since the start (``status``, ``report``);
- ``window:<lane>:<second>``: requests and server errors of one whole second (TTL
  :data:`WINDOW_TTL`): a window's counts are the sum of its seconds;
- ``latencies:<lane>``: a sorted set of latency samples scored by that time, capped to
  the newest :data:`LATENCY_CAP` — a window's percentiles are those of the samples
  scored inside its seconds (:meth:`LaneMetrics.between`), so counts and latencies of a
  window always cover the same seconds; ``summary`` reads the newest
  :data:`LATENCY_SAMPLES` of any age ("recent" latency for ``status``/``report``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from snakepool.config.keys import DEFAULT_PREFIX, Keys
from snakepool.errors import SnakepoolError

__all__ = ["ERROR_TYPE_FIELD", "LATENCY_CAP", "LATENCY_SAMPLES", "LaneMetrics", "percentile"]

#: The newest latencies ``summary`` (``status``, ``report``) takes its percentiles from.
LATENCY_SAMPLES = 1000
#: Latency samples kept per lane (the newest; ~100 B each in Redis, ~5 MiB per lane
#: full). A window holding more samples than this gets the percentiles of its newest
#: LATENCY_CAP (the snapshot's ``samples`` then stays below its ``requests``).
LATENCY_CAP = 50_000
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
        clock: Unix seconds now (tests control it): the second and score of a record,
            and the end of :meth:`window`.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        #: Unix seconds now: when a request finished (its second and its sample's score).
        self.clock = clock
        self._sample_ids = _SampleIds()

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
        now = self.clock()
        window = self.keys.lane_window(lane, int(now))
        ms = round(seconds * 1000, 3)
        latencies = self.keys.lane_latencies(lane)
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
            pipe.zadd(latencies, {self._sample_ids.member(ms): now})
            pipe.zremrangebyrank(latencies, 0, -LATENCY_CAP - 1)
            pipe.execute()

    def summary(self, lane: str) -> dict[str, Any]:
        """Totals, failures by type and latency percentiles (ms) of the newest
        :data:`LATENCY_SAMPLES` samples, whatever their age.

        Shape: ``{"requests", "errors", "client_errors", "shadow_copies", "error_types":
        {name: count}, "p50_ms", "p95_ms", "p99_ms"}`` (percentiles None without samples;
        ``requests`` includes the ``shadow_copies``).
        """
        raw = self.client.hgetall(self.keys.lane_metrics(lane))
        counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        members = self.client.zrange(self.keys.lane_latencies(lane), -LATENCY_SAMPLES, -1)
        samples = sorted(_sample_ms(m) for m in members)
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
            "p50_ms": percentile(samples, 0.50),
            "p95_ms": percentile(samples, 0.95),
            "p99_ms": percentile(samples, 0.99),
        }

    def window(self, lane: str, seconds: int) -> dict[str, int]:
        """Requests and (server) errors over the last ``seconds`` whole seconds, the
        current one included."""
        now = int(self.clock())
        return self._counts(lane, now - seconds + 1, now)

    def between(self, lane: str, first: int, last: int) -> dict[str, Any]:
        """Everything a decision needs about the whole seconds ``first`` … ``last``.

        A request belongs to second ``int(t)``, ``t`` the writer's clock when it finished;
        counts and latency samples are selected by that one rule, so they cover exactly
        the same requests (samples: at most :data:`LATENCY_CAP`, the newest).

        Shape: ``{"requests", "errors", "samples", "p50_ms", "p99_ms"}`` — counts as
        ints (``errors``: server errors only), percentiles in ms or None without
        samples. An empty range (``first > last``) has zeros and Nones.

        Raises:
            redis.RedisError: Redis could not be read.
        """
        counts = self._counts(lane, first, last)
        members = (
            self.client.zrangebyscore(self.keys.lane_latencies(lane), first, f"({last + 1}")
            if first <= last
            else []
        )
        samples = sorted(_sample_ms(m) for m in members)
        return {
            **counts,
            "samples": len(samples),
            "p50_ms": percentile(samples, 0.50),
            "p99_ms": percentile(samples, 0.99),
        }

    def _counts(self, lane: str, first: int, last: int) -> dict[str, int]:
        if first > last:
            return {"requests": 0, "errors": 0}
        with self.client.pipeline(transaction=False) as pipe:
            for second in range(first, last + 1):
                pipe.hmget(self.keys.lane_window(lane, second), "requests", "errors")
            rows = pipe.execute()
        return {
            "requests": sum(int(r[0] or 0) for r in rows),
            "errors": sum(int(r[1] or 0) for r in rows),
        }


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ascending ``ordered`` by nearest rank; None if empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _SampleIds:
    """Unique sorted-set members for latency samples: two requests with the same
    latency must be two members. ``<ms>:<8 random hex of this writer><counter>``."""

    def __init__(self) -> None:
        self._writer = os.urandom(4).hex()
        self._count = itertools.count()  # next() is atomic under the GIL

    def member(self, ms: float) -> str:
        return f"{ms!r}:{self._writer}{next(self._count):x}"


def _sample_ms(member: object) -> float:
    """The latency (ms) in a sample's member ``<ms>:<id>``."""
    text = member.decode() if isinstance(member, bytes) else str(member)
    return float(text.partition(":")[0])
