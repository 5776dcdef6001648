"""The recovery bootstep: every node records what it holds and sweeps for dead nodes.

Installed next to the node's own bootstep (:func:`snakepool.tasks.worker.bootstep.install`).
Like it, it starts before the consumer — so the first message taken is already
recorded — and the consumer stops first. One thread per node, once a second::

    beat   this node's in-flight record is alive for HEARTBEAT_TTL more seconds
    sweep  settle dead nodes' messages, drain gone nodes' direct queues, report poison

Celery's signals feed the record: ``task_received`` (the consumer took a message),
``task_prerun`` (a thread starts it), ``task_postrun`` / ``task_revoked`` (done).

A node sweeps only once it has beaten without a break for longer than a heartbeat's
life: after a Redis outage (or at its own start) every live node has then beaten again,
so a node that was only cut off is never taken for dead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

import redis
from celery import Celery, bootsteps, signals

from snakepool.config.keys import Keys
from snakepool.sessions import redis_from_url
from snakepool.tasks.worker.node import HEARTBEAT_SECONDS
from snakepool.tasks.worker.recovery.broker import BrokerRedis
from snakepool.tasks.worker.recovery.deadletters import DeadLetterStore
from snakepool.tasks.worker.recovery.inflight import InflightRecord
from snakepool.tasks.worker.recovery.sweep import Recovery

__all__ = ["RecoveryService", "RecoveryStep"]

log = logging.getLogger("snakepool.recovery")

_UID = "snakepool-recovery"


class RecoveryService:
    """One node's in-flight record and survivor sweep (see the module docstring).

    Args:
        app: The worker's Celery app (``app.snakepool_settings`` set by ``create_app``).
        node: This node's name (``name@host``).

    Raises:
        ValueError: the broker is not kombu's Redis transport.
    """

    def __init__(self, app: Celery, *, node: str) -> None:
        settings = app.snakepool_settings
        keys = Keys(settings.key_prefix)
        self.broker = BrokerRedis(app)
        self.record = InflightRecord(
            self.broker.client, keys, node=node,
            unacked_index_key=self.broker.unacked_index_key, keep=settings.visibility_timeout,
        )  # fmt: skip
        self.heartbeats = redis_from_url(settings.redis_url)
        self.recovery = Recovery(
            broker=self.broker, keys=keys, dead_letters=DeadLetterStore(app, self.broker, keys),
            heartbeats=self.heartbeats, threshold=settings.poison_threshold,
            me=self.record.incarnation,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy_since: float | None = None

    def start(self) -> None:
        """Listen to Celery's task signals, beat once, start the thread."""
        signals.task_received.connect(self._on_received, weak=False, dispatch_uid=_UID)
        signals.task_prerun.connect(self._on_prerun, weak=False, dispatch_uid=_UID)
        signals.task_postrun.connect(self._on_done, weak=False, dispatch_uid=_UID)
        signals.task_revoked.connect(self._on_revoked, weak=False, dispatch_uid=_UID)
        self.tick(sweep=False)
        self._thread = threading.Thread(target=self._run, name="snakepool-recovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and the signals; withdraw the record if nothing is left in it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for signal in (signals.task_received, signals.task_prerun, signals.task_postrun,
                       signals.task_revoked):  # fmt: skip
            signal.disconnect(dispatch_uid=_UID)
        try:
            self.record.retire()
        except redis.RedisError as exc:
            log.warning("could not withdraw the in-flight record: %s", exc)
        self.heartbeats.close()
        self.broker.close()

    def tick(self, *, sweep: bool = True) -> None:
        """One beat, then (once beating steadily) one sweep; never raises."""
        now = time.monotonic()
        try:
            self.record.beat()
        except redis.RedisError as exc:
            self._healthy_since = None
            log.warning("in-flight heartbeat failed: %s", exc)
            return
        if self._healthy_since is None:
            self._healthy_since = now
        if not sweep or now - self._healthy_since < self.record.ttl + HEARTBEAT_SECONDS:
            return
        try:
            self.recovery.sweep()
        except Exception:
            log.exception("recovery sweep failed (the next one runs in a second)")

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.tick()

    # ------------------------------------------------------- Celery's signals

    def _on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if request is None or tag is None:
            return
        self.record.received(
            str(tag), task_id=str(request.id), task=str(getattr(request, "type", request.name)),
            queue=str((request.delivery_info or {}).get("routing_key")),
        )  # fmt: skip

    def _on_prerun(self, sender: Any = None, task: Any = None, **_: Any) -> None:
        if (tag := _tag_of(task)) is not None:
            self.record.started(tag)

    def _on_done(self, sender: Any = None, task: Any = None, **_: Any) -> None:
        if (tag := _tag_of(task)) is not None:
            self.record.finished(tag)
            request = task.request
            if (request.delivery_info or {}).get("redelivered"):
                self.record.forget_deaths(str(request.id))

    def _on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            self.record.finished(str(tag))


def _tag_of(task: Any) -> str | None:
    properties = getattr(getattr(task, "request", None), "properties", None)
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    return None if tag is None else str(tag)


class RecoveryStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs this worker's :class:`RecoveryService` (not with the embedded demo's
    in-memory broker, which has nothing to recover)."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.service: RecoveryService | None = None

    def start(self, worker: Any) -> None:
        """Start recording and sweeping (before the consumer starts)."""
        if not BrokerRedis.supports(worker.app):
            log.info("broker is not Redis: node-death recovery is off")
            return
        self.service = RecoveryService(worker.app, node=worker.hostname)
        self.service.start()

    def stop(self, worker: Any) -> None:
        """Stop (after the consumer: kombu has restored what it still held)."""
        if self.service is not None:
            self.service.stop()
            self.service = None

    def shutdown(self, worker: Any) -> None:
        """Same as stop (called on cold shutdown)."""
        self.stop(worker)
