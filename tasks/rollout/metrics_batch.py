"""Lane metrics off the request's path: stored with the result, batched under load.

:class:`~snakepool.tasks.rollout.metrics.LaneMetrics` writes each request in its own
pipeline (6-8 commands) and waits for the round trip, on the lane task's hot path. A
worker node instead::

    record() ── batch (counters, per-second windows, latencies)
      │   ├─ with_results (a node whose result backend is ours): the result store's own
      │   │  MULTI takes the batch (take_commands), so the figures go in the same
      │   │  transaction as the result — no command of their own on the wire
      │   └─ else: ONE write on the node's own connection, no wait, when the worker holds
      │      no other request (``busy()`` false) or the batch is FLUSH_AFTER_SECONDS old
      │      or MAX_BATCH long; the tail of a burst by flush_if_due() (the heartbeat)
      └─ collect(): once the result is stored, send what no result took (a shadow copy
                    stores none) unless another is coming (busy), read the replies,
                    raise a refusal

Why a caller still reads the figures right after its result: they are written in the
transaction that stores it, or before it (sent on their own connection, or in another
thread's store, which a store whose figures it took waits for) — and Redis runs
commands in one thread in the order they reach it, so they are applied before the result
is even published, and so before anything the caller sends once it has the result. The
request does not wait for a round trip of its own, and a busy node writes many requests
at once: what ``status``, the breakers and the controller read is that fresh. A refused
write is raised by :meth:`collect` (or by the next send, which reads earlier replies
first), which the lane pipeline logs; the request's outcome stands (a refused figure
never fails the result stored with it), and those figures are lost, as a failed
per-request write lost its own. Memory is bounded by :data:`MAX_BATCH` records.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from snakepool.config.keys import DEFAULT_PREFIX
from snakepool.errors import SnakepoolError
from snakepool.tasks.rollout import metrics as lane_metrics
from snakepool.tasks.rollout.metrics import ERROR_TYPE_FIELD, LaneMetrics

__all__ = [
    "FLUSH_AFTER_SECONDS", "MAX_BATCH", "SEND_WAIT_SECONDS", "TRIM_EVERY", "BatchedLaneMetrics",
]  # fmt: skip

#: Oldest a batched record gets before the next request that finishes writes the batch.
FLUSH_AFTER_SECONDS = 0.2
#: Records kept before the batch is written whatever its age (bounds memory).
MAX_BATCH = 500
#: Latency samples a node adds to a lane's set between two trims to ``LATENCY_CAP``
#: (``ZREMRANGEBYRANK``: one command per batch saved). The set holds at most
#: ``LATENCY_CAP`` + ``TRIM_EVERY`` per node writing to it (50 000 + 64 per node).
TRIM_EVERY = 64
#: Longest a result store waits for another thread's send that carries its figures.
SEND_WAIT_SECONDS = 2.0
#: Seconds of windows remembered as already having their TTL (a few suffice: records
#: arrive in time order, give or take a thread switch).
_EXPIRED_KEPT = 5


@dataclass
class _Window:
    """One second of one lane."""

    requests: int = 0
    errors: int = 0
    ms_total: float = 0.0


@dataclass
class _LaneBatch:
    """What the batch holds for one lane (all additive, so merging is a sum)."""

    counters: Counter[str] = field(default_factory=Counter)
    windows: dict[int, _Window] = field(default_factory=dict)
    #: (when the request finished, its latency in ms), oldest first.
    latencies: list[tuple[float, float]] = field(default_factory=list)


class BatchedLaneMetrics(LaneMetrics):
    """:class:`LaneMetrics` whose :meth:`record` batches while the node is busy.

    Reading (``summary``, ``window``) is :class:`LaneMetrics`'s, from Redis.

    Args:
        client: redis-py client.
        prefix: Key prefix.
        busy: Whether the node has requests to serve besides the one recording (a
            worker node asks Celery); by default never, so every record is written at
            once, as :class:`LaneMetrics` writes it.
        clock: Unix seconds now, as :class:`LaneMetrics` takes it.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, prefix=prefix, clock=clock)
        self.busy = busy or (lambda: False)
        self._lock = threading.Condition()
        #: Each emptying of the batch is a send numbered by ``_generation`` (the number
        #: the batch then held), in ``_unsent`` until it is out; ``_local.generation``
        #: is the batch this thread last recorded into (see :meth:`take_commands`).
        self._generation = 0
        self._unsent: set[int] = set()
        self._local = threading.local()
        self._lanes: dict[str, _LaneBatch] = {}
        self._records = 0
        self._oldest = 0.0
        #: The node's own connection for the figures, its replies read after the fact;
        #: ``_io`` guards it, ``_pending`` and ``_expired``.
        self._io = threading.Lock()
        #: lane → the recent seconds whose window this node has already given its TTL:
        #: one EXPIRE per window and node, not one per write.
        self._expired: dict[str, set[int]] = {}
        self._connection: Any = None
        self._pending = 0
        #: lane → latency samples this node added since it last trimmed the lane's set.
        self._untrimmed: dict[str, int] = {}
        #: The result store takes the batch (:meth:`take_commands`); set by the node.
        self.with_results = False
        #: A refusal among the figures a result store sent (raised by :meth:`collect`).
        self._refused: redis.RedisError | None = None

    def flush_if_due(self) -> None:
        """Write the batch if it is :data:`FLUSH_AFTER_SECONDS` old (the tail of a burst).

        Raises:
            redis.RedisError: Redis refused it (the batch is dropped).
        """
        with self._lock:
            due = self._records > 0 and time.time() - self._oldest >= FLUSH_AFTER_SECONDS
        if due:
            self.flush()

    def record(
        self, lane: str, seconds: float, error: BaseException | None, *, shadow_copy: bool = False
    ) -> None:
        """Count one finished request (see :meth:`LaneMetrics.record`); maybe send the batch.

        Call :meth:`collect` once the request's result is out: it reads the replies.

        Raises:
            redis.RedisError: this thread sent the batch and the connection failed, or
                the replies of an earlier batch read first held a refusal.
        """
        client_error = isinstance(error, SnakepoolError) and error.is_client_error
        server_error = error is not None and not client_error
        now = time.time()
        finished = self.clock()
        ms = round(seconds * 1000, 3)
        with self._lock:
            batch = self._lanes.setdefault(lane, _LaneBatch())
            batch.counters["requests"] += 1
            window = batch.windows.setdefault(int(finished), _Window())
            window.requests += 1
            window.ms_total += ms
            if server_error:
                batch.counters["errors"] += 1
                window.errors += 1
            if client_error:
                batch.counters["client_errors"] += 1
            if error is not None:
                batch.counters[f"{ERROR_TYPE_FIELD}{type(error).__name__}"] += 1
            if shadow_copy:
                batch.counters["shadow_copies"] += 1
            batch.latencies.append((finished, ms))
            if self._records == 0:
                self._oldest = now
            self._records += 1
            self._local.generation = self._generation
            due = self._records >= MAX_BATCH or now - self._oldest >= FLUSH_AFTER_SECONDS
        if due or not (self.with_results or self.busy()):
            self.flush(collect=False)  # replies: collect(), after the result

    def flush(self, *, collect: bool = True) -> None:
        """Send everything batched in one round trip (nothing to do when it is empty).

        Args:
            collect: Also read Redis's replies now. The lane leaves that for after its
                result is stored (:meth:`collect`): Redis runs one connection's commands
                before anything sent later on any connection, so the figures are
                in before the caller can even learn the result — without the request
                waiting for the round trip.

        Raises:
            redis.RedisError: Redis refused it (the batch is dropped), or an earlier
                batch whose replies were read now.
        """
        lanes, send = self._take()
        if lanes:
            try:
                with self._io:
                    self._send(self._commands(lanes))
            finally:
                self._sent(send)
        if collect:
            self.collect()

    def collect(self) -> None:
        """Once the result is stored: send what no result store took, read the replies of
        what was sent, and raise the first error among them.

        Raises:
            redis.RedisError: a command was refused, or the connection failed.
        """
        with self._lock:
            left = self._records > 0 and self.with_results
            aged = time.time() - self._oldest >= FLUSH_AFTER_SECONDS
        if left and (aged or not self.busy()):  # else the next result store takes it
            self.flush(collect=False)
        with self._io:
            refused, self._refused = self._refused, None
            self._read_replies()
        if refused is not None:
            raise refused

    def take_commands(self) -> list[tuple[object, ...]]:
        """Empty the batch into the commands that add it to the figures, for a result
        store to send in its own transaction (``ResilientRedisBackend``); [] when empty.
        Call :meth:`sent` once that transaction is done (or failed), and :meth:`refused`
        with any of them Redis refuses.

        When another thread's send holds this thread's own figures (it emptied the batch
        first) and is not out yet, this waits for it (at most :data:`SEND_WAIT_SECONDS`):
        the result stored next is never out before the figures of its request.
        """
        lanes, self._local.send = self._take()
        mine = getattr(self._local, "generation", None)
        if mine is not None and mine != self._local.send:
            with self._lock:
                self._lock.wait_for(lambda: mine not in self._unsent, SEND_WAIT_SECONDS)
        if not lanes:
            return []
        with self._io:
            return self._commands(lanes)

    def sent(self) -> None:
        """The transaction that carried what :meth:`take_commands` gave this thread is
        done (executed, refused or failed)."""
        self._sent(getattr(self._local, "send", None))
        self._local.send = None

    def _take(self) -> tuple[dict[str, _LaneBatch], int | None]:
        """Empty the batch: its lanes, and the number of this send (None: was empty)."""
        with self._lock:
            lanes, self._lanes, self._records = self._lanes, {}, 0
            if not lanes:
                return lanes, None
            send, self._generation = self._generation, self._generation + 1
            self._unsent.add(send)
            return lanes, send

    def _sent(self, send: int | None) -> None:
        """Send ``send`` is out (or failed): wake the stores waiting for it."""
        if send is not None:
            with self._lock:
                self._unsent.discard(send)
                self._lock.notify_all()

    def refused(self, error: redis.RedisError) -> None:
        """Redis refused one of the commands :meth:`take_commands` gave: those figures
        are lost, and :meth:`collect` raises ``error``."""
        with self._io:
            self._expired.clear()  # what failed may have created a window without TTL
            self._refused = self._refused or error

    def _commands(self, lanes: dict[str, _LaneBatch]) -> list[tuple[object, ...]]:
        """Under ``_io``: the commands that add ``lanes`` to the figures in Redis."""
        cap = lane_metrics.LATENCY_CAP
        commands: list[tuple[object, ...]] = []
        for lane, batch in lanes.items():
            counters = self.keys.lane_metrics(lane)
            commands += [("HINCRBY", counters, n, c) for n, c in batch.counters.items()]
            expired = self._expired.setdefault(lane, set())
            for second, window in batch.windows.items():
                key = self.keys.lane_window(lane, second)
                commands.append(("HINCRBY", key, "requests", window.requests))
                if window.errors:
                    commands.append(("HINCRBY", key, "errors", window.errors))
                commands.append(("HINCRBYFLOAT", key, "ms_total", round(window.ms_total, 3)))
                if second not in expired:
                    commands.append(("EXPIRE", key, lane_metrics.WINDOW_TTL))
                    expired.add(second)
            if expired:
                newest = max(expired)
                self._expired[lane] = {s for s in expired if s > newest - _EXPIRED_KEPT}
            latencies = self.keys.lane_latencies(lane)
            scored: list[object] = []
            for finished, ms in batch.latencies[-cap:]:
                scored += [finished, self._sample_ids.member(ms)]
            commands.append(("ZADD", latencies, *scored))
            added = self._untrimmed.get(lane, TRIM_EVERY) + len(scored) // 2
            if added >= TRIM_EVERY:  # the first write of a lane trims too
                commands.append(("ZREMRANGEBYRANK", latencies, 0, -cap - 1))
                added = 0
            self._untrimmed[lane] = added
        return commands

    def _send(self, commands: list[tuple[object, ...]]) -> None:
        """Under ``_io``: send ``commands`` in one ``MULTI``/``EXEC``, without waiting for
        the replies: a connection cut before Redis has the ``EXEC`` applies none of them
        (one cut mid-batch applied a part: a shadow copy counted as a request)."""
        commands = [("MULTI",), *commands, ("EXEC",)]
        earlier: redis.RedisError | None = None
        try:
            self._read_replies()  # an earlier batch's, so replies stay in step
        except redis.ResponseError as exc:
            earlier = exc
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        try:
            self._connection.send_packed_command(self._connection.pack_commands(commands))
        except Exception:
            self._reset()
            raise
        self._pending += len(commands)
        if earlier is not None:
            raise earlier

    def _read_replies(self) -> None:
        """Under ``_io``: read every pending reply, then raise the first refusal."""
        refused: redis.ResponseError | None = None
        try:
            while self._pending:
                self._pending -= 1
                try:
                    reply = self._connection.read_response()
                except redis.ResponseError as exc:  # EXECABORT: queued ones refused
                    refused = refused or exc
                    continue
                if isinstance(reply, list):  # EXEC's: a refused command's error in place
                    inside = next((r for r in reply if isinstance(r, redis.ResponseError)), None)
                    refused = refused or inside
        except Exception:
            self._reset()
            raise
        if refused is not None:
            self._expired.clear()  # what failed may have created a window without TTL
            raise refused

    def _reset(self) -> None:
        """Under ``_io``: forget a broken connection (the next send reconnects)."""
        self._pending = 0
        self._expired.clear()
        if self._connection is not None:
            self._connection.disconnect()
