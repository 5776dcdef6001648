"""What a worker node holds while it runs: its pool, the store, the flags, its heartbeat.

One :class:`Node` per worker process, created by the bootstep before the node consumes
and reachable from tasks through :func:`current_node`. Every second the node writes a
heartbeat (name, lanes, version, pool stats, interpreter memory) with a short TTL:
``snakepool status`` lists the live nodes from these, and the router treats a node whose
heartbeat expired as gone.
While it is not stopping, the heartbeat also says which lanes it serves
(:func:`~snakepool.tasks.rollout.liveness.announce_lanes`): a lane nobody announces
gets no new traffic.

Warm shutdown (DESIGN.md §8), :meth:`Node.shutdown`::

    SIGTERM ─► Celery stops consuming ─► Node.shutdown(SHUTDOWN_GRACE)
                                           stopping: a lane request that has not started
                                           (queued for an interpreter too: the pool drains)
                                           raises NodeStopping ─► requeued, not failed
                                           wait until no request is in flight (≤ grace)
                                           withdraw the heartbeat, stop the pool

The pool itself has no "drain" (wait until nothing is in flight); the node counts its
own requests (:meth:`Node.serving`) instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis

from snakepool.config import Settings
from snakepool.config.flags import FlagCache, FlagStore
from snakepool.config.keys import Keys
from snakepool.errors import PoolUnavailable, WorkerCrashed
from snakepool.pool import Pool
from snakepool.sessions import SessionStore, redis_from_url
from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.liveness import LaneLiveness, announce_lanes
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics
from snakepool.tasks.rollout.shadow import CommandCatalog, ShadowRecorder
from snakepool.tasks.worker.node_facts import interpreter_memory, snakepool_version
from snakepool.tasks.worker.observer import LaneObserver

if TYPE_CHECKING:
    from snakepool.tasks.prometheus.exporter import MetricsExporter

__all__ = [
    "HEARTBEAT_SECONDS",
    "HEARTBEAT_TTL",
    "Node",
    "NodeStopping",
    "current_node",
    "live_nodes",
]

log = logging.getLogger("snakepool.node")

#: Seconds between heartbeats.
HEARTBEAT_SECONDS = 1.0
#: Seconds a heartbeat lives: a node silent this long counts as gone.
HEARTBEAT_TTL = 4

_current: Node | None = None


class NodeStopping(BaseException):
    """This node is shutting down: the request has not started here and goes back to the
    broker for another node.

    Not an :class:`Exception` (STYLE: shutdown signals are not): the lane pipeline lets
    it through untouched, so "this node is stopping" is never a request's outcome, never
    counted against a lane and never retried here. The lane task turns it into a requeue.
    """


def current_node() -> Node:
    """The node of this worker process (after its shutdown: the stopped node, which
    refuses every request with :class:`NodeStopping`).

    Raises:
        PoolUnavailable: no node was ever started here (the bootstep has not started).
    """
    if _current is None:
        raise PoolUnavailable("this worker hosts no snakepool node (bootstep not started)")
    return _current


class Node:
    """A worker node's resources.

    Args:
        settings: Validated settings.
        name: The Celery hostname (``lane-name@host``).
        lanes: The lanes this node serves (``router``, ``v3``, ``v2compat``).
    """

    def __init__(self, settings: Settings, *, name: str, lanes: tuple[str, ...]) -> None:
        self.settings = settings
        self.name = name
        self.lanes = lanes
        self.redis: redis.Redis = redis_from_url(settings.redis_url)
        self.keys = Keys(settings.key_prefix)
        self.store = SessionStore(
            self.redis, prefix=settings.key_prefix, default_ttl=settings.session_ttl
        )
        self.flags = FlagCache(FlagStore(self.redis, prefix=settings.key_prefix))
        # Batched while the node has other requests (one round trip for many under load).
        self.metrics = BatchedLaneMetrics(self.redis, prefix=settings.key_prefix, busy=_busy)
        self.catalog = CommandCatalog(self.redis, prefix=settings.key_prefix)
        self.shadows = ShadowRecorder(self.redis, prefix=settings.key_prefix)
        self.liveness = LaneLiveness(
            self.redis, prefix=settings.key_prefix, audit=self.flags.store, who=f"node {name}"
        )
        self.breaker = CircuitBreaker(
            self.metrics, BreakerPolicy.from_settings(settings), liveness=self.liveness
        )
        self.pool: Pool | None = None
        #: Told about every request the lanes finish (Prometheus when METRICS_PORT is set).
        self.observer = LaneObserver()
        #: The ``/metrics`` endpoint, when METRICS_PORT is set.
        self.exporter: MetricsExporter | None = None
        self.started = time.time()
        #: True from the start of a shutdown: requests not yet started are refused.
        self.stopping = False
        self._pool_stopped = False
        self._in_flight = 0
        self._quiet = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the metrics endpoint (METRICS_PORT), the pool (if this node runs a lane)
        and the heartbeat.

        Raises:
            ConfigError: the metrics port cannot be listened on, or the pool's settings.
            PoolUnavailable: the interpreters did not start.
        """
        global _current
        if self.settings.metrics_port:
            from snakepool.tasks.prometheus.exporter import MetricsExporter

            self.exporter = MetricsExporter(
                self, port=self.settings.metrics_port, address=self.settings.metrics_address
            )
            self.exporter.start()
            self.observer = self.exporter.requests
        if any(lane in ("v3", "v2compat") for lane in self.lanes):
            observer = self.exporter.pool_events if self.exporter is not None else None
            self.pool = Pool.from_settings(self.settings, observer=observer)
            self.pool.start()
            self._publish_commands()
        _current = self
        self.heartbeat()
        self._thread = threading.Thread(target=self._beat, name="snakepool-heartbeat", daemon=True)
        self._thread.start()
        log.info("node %s serving %s", self.name, ", ".join(self.lanes))

    # ------------------------------------------------------------------ shutdown

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request in flight for as long as the block runs.

        Raises:
            NodeStopping: the node is shutting down; the request must not start here.
        """
        with self._quiet:
            if self.stopping:
                raise NodeStopping(f"node {self.name} is stopping")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._quiet:
                self._in_flight -= 1
                self._quiet.notify_all()

    def in_flight(self) -> int:
        """Requests running on this node now."""
        with self._quiet:
            return self._in_flight

    def refused_by_shutdown(self, error: BaseException) -> bool:
        """Whether ``error`` only says that this node is stopping (the request never ran,
        or its interpreter was stopped under it by the shutdown): requeue, not a failure."""
        if not self.stopping:
            return False
        return isinstance(error, PoolUnavailable) or (
            self._pool_stopped and isinstance(error, WorkerCrashed)
        )

    def shutdown(self, grace: float | None = None) -> bool:
        """Warm shutdown: refuse what has not started, let started requests finish, stop.

        Args:
            grace: Seconds the requests in flight get (default ``SHUTDOWN_GRACE``, which
                is at least ``REQUEST_TIMEOUT``: every started request ends by its own
                timeout first).

        Returns:
            True when every request in flight had finished before the pool stopped.
        """
        if grace is None:
            grace = float(self.settings.shutdown_grace or self.settings.request_timeout)
        deadline = time.monotonic() + grace
        with self._quiet:
            self.stopping = True
            waiting = self._in_flight
        if self.pool is not None:
            # Requests queued for an interpreter have not started: PoolUnavailable now,
            # which the lane turns into a requeue, instead of starting them here.
            self.pool.begin_drain()
        with self._quiet:
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._quiet.wait(remaining)
            drained = self._in_flight == 0
        if waiting:
            log.info("node %s: %d request(s) in flight at shutdown; drained: %s",
                     self.name, waiting, drained)  # fmt: skip
        if not drained:
            log.warning("node %s: %d request(s) still running after the %.0f s shutdown grace",
                        self.name, self.in_flight(), grace)  # fmt: skip
        self.stop(grace=max(0.0, deadline - time.monotonic()))
        return drained

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new requests, stop the heartbeat, withdraw it, stop the pool.

        After this the node stays :func:`current_node`, refusing every request with
        :class:`NodeStopping`: a task Celery had queued in its thread pool is requeued
        rather than failed for want of a node.
        """
        with self._quiet:
            self.stopping = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(redis.RedisError):
            self.metrics.flush()
            self.redis.delete(self.keys.node(self.name))
        if self.pool is not None:
            self._pool_stopped = True
            self.pool.stop(grace=grace)
        if self.exporter is not None:
            self.exporter.stop()

    def describe(self) -> dict[str, Any]:
        """The heartbeat's content (and what ``celery inspect stats`` shows)."""
        pool = self.pool.stats() if self.pool is not None else None
        return {
            "name": self.name,
            "lanes": list(self.lanes),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "at": time.time(),
            # `snakepool check` wants every node on one version.
            "version": snakepool_version(),
            "pool": pool,
            "memory": interpreter_memory(pool.get("pids", [])) if pool is not None else None,
            # The flags version this node routes by (refreshed here if stale).
            "flags_version": self.flags.version_in_use(),  # never raises: unreadable flags
            "open_breakers": [lane for lane in ("v3", "v2compat") if self.breaker.is_open(lane)],
            # Where Prometheus scrapes this node (None: no metrics endpoint).
            "metrics_port": self.exporter.port if self.exporter is not None else None,
            # Lanes this node's routing sends to the other lane now, and why.
            "shedding": self.breaker.shedding(),
            "stopping": self.stopping,
            "in_flight": self.in_flight(),
        }

    def heartbeat(self) -> None:
        """Write one heartbeat (and, unless stopping, announce the lanes it serves)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.node(self.name), json.dumps(self.describe()), ex=HEARTBEAT_TTL)
            if not self.stopping:
                announce_lanes(pipe, self.keys, self.name, self.lanes, HEARTBEAT_TTL)
            pipe.execute()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            try:
                self.metrics.flush_if_due()  # what the last busy moments left batched
            except redis.RedisError as exc:
                log.warning("writing batched lane metrics failed: %s", exc)

    def _publish_commands(self) -> None:
        assert self.pool is not None
        commands = self.pool.commands()
        if commands:
            self.redis.hset(
                self.keys.commands, mapping={k: json.dumps(v) for k, v in commands.items()}
            )


def _busy() -> bool:
    """Whether this Celery worker holds a request besides the one asking (received and
    not finished: ``celery.worker.state.reserved_requests``); false outside a worker."""
    from celery.worker import state

    return len(state.reserved_requests) > 1


def live_nodes(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every node whose heartbeat has not expired."""
    nodes = []
    for key in client.scan_iter(match=keys.node_pattern, count=500):
        raw = client.get(key)
        if raw:
            nodes.append(json.loads(raw))
    return sorted(nodes, key=lambda n: n["name"])


def node_alive(client: redis.Redis, keys: Keys, name: str) -> bool:
    """Whether ``name`` has a live heartbeat."""
    return bool(client.exists(keys.node(name)))
