"""What a worker node holds while it runs: its pool, the store, the flags, its heartbeat.

One :class:`Node` per worker process, created by the bootstep before the node consumes
and reachable from tasks through :func:`current_node`. Every second the node writes a
heartbeat (name, lanes, version, pool stats, interpreter memory) with a short TTL:
``snakepool status`` lists the live nodes from these, and the router treats a node whose
heartbeat expired as gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from snakepool.config import Settings
from snakepool.config.flags import FlagCache, FlagStore
from snakepool.config.keys import Keys
from snakepool.pool import Pool
from snakepool.sessions import SessionStore, redis_from_url
from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics
from snakepool.tasks.rollout.shadow import CommandCatalog, ShadowRecorder
from snakepool.tasks.worker.node_facts import interpreter_memory, snakepool_version
from snakepool.tasks.worker.observer import LaneObserver

if TYPE_CHECKING:
    from snakepool.tasks.prometheus.exporter import MetricsExporter

__all__ = ["HEARTBEAT_SECONDS", "HEARTBEAT_TTL", "Node", "current_node", "live_nodes"]

log = logging.getLogger("snakepool.node")

#: Seconds between heartbeats.
HEARTBEAT_SECONDS = 1.0
#: Seconds a heartbeat lives: a node silent this long counts as gone.
HEARTBEAT_TTL = 4

_current: Node | None = None


def current_node() -> Node:
    """The node of this worker process.

    Raises:
        PoolUnavailable: no node is running here (the bootstep has not started).
    """
    if _current is None:
        from snakepool.errors import PoolUnavailable

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
        self.breaker = CircuitBreaker(self.metrics, BreakerPolicy.from_settings(settings))
        self.pool: Pool | None = None
        #: Told about every request the lanes finish (Prometheus when METRICS_PORT is set).
        self.observer = LaneObserver()
        #: The ``/metrics`` endpoint, when METRICS_PORT is set.
        self.exporter: MetricsExporter | None = None
        self.started = time.time()
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

            self.exporter = MetricsExporter(self, port=self.settings.metrics_port)
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

    def stop(self, grace: float = 10.0) -> None:
        """Stop the heartbeat, withdraw it, stop the pool."""
        global _current
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(redis.RedisError):
            self.metrics.flush()
            self.redis.delete(self.keys.node(self.name))
        if self.pool is not None:
            self.pool.stop(grace=grace)
        if self.exporter is not None:
            self.exporter.stop()
        if _current is self:
            _current = None

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
            "memory": interpreter_memory(pool["pids"]) if pool is not None else None,
            # The flags version this node routes by (refreshed here if stale).
            "flags_version": self.flags.version_in_use(),  # never raises: unreadable flags
            "open_breakers": [lane for lane in ("v3", "v2compat") if self.breaker.is_open(lane)],
            # Where Prometheus scrapes this node (None: no metrics endpoint).
            "metrics_port": self.exporter.port if self.exporter is not None else None,
        }

    def heartbeat(self) -> None:
        """Write one heartbeat."""
        self.redis.set(self.keys.node(self.name), json.dumps(self.describe()), ex=HEARTBEAT_TTL)

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
