"""The recovery bootstep: every node records what it holds and sweeps for dead nodes.

Installed after the node's own bootstep (:func:`snakepool.tasks.worker.bootstep.install`)
and before the consumer, so the first message taken is already recorded. Two threads
per node, each once a second::

    beat   this node's in-flight record is alive for HEARTBEAT_TTL more seconds
    sweep  settle dead nodes' messages, drain gone nodes' direct queues, report poison

The record is fed by Celery's ``task_received`` signal (the consumer took a message),
``SnakepoolTask``'s own call (a thread starts it, and it has run: cheaper than Celery's
``task_prerun`` / ``task_postrun`` signals) and ``task_revoked`` (done). On
``worker_shutdown`` — sent once every bootstep has stopped, so the node's heartbeat is
gone and no router sends it anything — the node removes its own worker-direct binding
(:mod:`.bindings`); a survivor removes a dead node's.

A node sweeps only once it has beaten without a break for longer than a heartbeat's
life: after a Redis outage (or at its own start) every live node has then beaten again,
so a node that was only cut off is never taken for dead. A warm stop waits (up to
``SHUTDOWN_GRACE``) for the requests this node started, before the node's pool stops,
and the beat goes on until the process ends: a request still running is never handed
to another node while its own is alive. Whatever is left unacknowledged at the end
(prefetched, never started) is put back on its queue by a survivor, uncounted.
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
from snakepool.tasks.worker.app import LANE_TASKS
from snakepool.tasks.worker.inflight_entry import ACCEPTED_SCORE
from snakepool.tasks.worker.node import HEARTBEAT_SECONDS
from snakepool.tasks.worker.options import is_shadow_task_id
from snakepool.tasks.worker.pop_defer import TRIM_SECONDS, deferred_list, trim_lists
from snakepool.tasks.worker.recovery.bindings import release_own_bindings
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
        self.app, self.node, self.keys = app, node, keys
        self.broker = BrokerRedis(app)
        self.record = InflightRecord(
            self.broker.client, keys, node=node,
            unacked_index_key=self.broker.unacked_index_key, keep=settings.visibility_timeout,
            incarnation=getattr(app, "snakepool_incarnation", None),
        )  # fmt: skip
        self.heartbeats = redis_from_url(settings.redis_url)
        self.recovery = Recovery(
            broker=self.broker, keys=keys, dead_letters=DeadLetterStore(app, self.broker, keys),
            heartbeats=self.heartbeats, threshold=settings.poison_threshold,
            me=self.record.incarnation, mailbox=app.control.mailbox,
        )  # fmt: skip
        self._stopping = threading.Event()
        self._healthy_since: float | None = None
        self._trimmed_at = float("-inf")

    def start(self) -> None:
        """Listen to Celery's task signals, beat once, start beating and sweeping."""
        signals.task_received.connect(self._on_received, weak=False, dispatch_uid=_UID)
        self.app.snakepool_delivery_hooks = self  # task_started / task_done
        signals.task_revoked.connect(self._on_revoked, weak=False, dispatch_uid=_UID)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False, dispatch_uid=_UID)
        self.beat()
        for name, loop in (("beat", self._beat_loop), ("sweep", self._sweep_loop)):
            threading.Thread(target=loop, name=f"snakepool-{name}", daemon=True).start()

    def stop(self, grace: float) -> None:
        """A warm stop: wait up to ``grace`` seconds for the requests this node started,
        then stop sweeping. The beat (and the record) goes on until the process ends."""
        if not self.record.wait_for_started(grace):
            log.warning("requests still running after %g s: their messages stay ours", grace)
        self._stopping.set()

    def beat(self) -> None:
        """One beat of the in-flight record; never raises."""
        try:
            self.record.beat()
        except redis.RedisError as exc:
            self._healthy_since = None
            log.warning("in-flight heartbeat failed: %s", exc)
            return
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    def sweep(self) -> None:
        """One survivor's sweep, once this node has beaten steadily; never raises."""
        since = self._healthy_since
        if since is None or time.monotonic() - since < self.record.ttl + HEARTBEAT_SECONDS:
            return
        try:
            self.recovery.sweep()
        except Exception:
            log.exception("recovery sweep failed (the next one runs in a second)")

    def trim_shadow_copies(self) -> None:
        """Every ``TRIM_SECONDS``, cap both lanes' lists of shadow copies (``pop_defer``),
        whatever lanes this node serves (a lane whose nodes are all of an earlier version
        never reads its list: a rolling deploy stopped half way), and count what went in
        the shadow counts' ``dropped``. Never raises."""
        if time.monotonic() - self._trimmed_at < TRIM_SECONDS:
            return
        self._trimmed_at = time.monotonic()
        try:
            lists = [deferred_list(lane) for lane in LANE_TASKS]
            dropped = trim_lists(self.broker.client, lists)  # the broker's Redis
            if dropped:  # beside the comparisons, in the store's (REDIS_URL)
                self.heartbeats.hincrby(self.keys.shadow_counts, "dropped", dropped)
        except redis.RedisError as exc:
            log.debug("trimming shadow copies postponed: %s", exc)

    def _beat_loop(self) -> None:
        while True:  # until the process ends (see stop)
            time.sleep(HEARTBEAT_SECONDS)
            self.beat()

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            self.sweep()
            self.trim_shadow_copies()

    # ------------------------------------------------------- Celery's signals

    def _on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if message is None or request is None or tag is None:
            return
        self.record.received(
            str(tag), task_id=str(request.id), task=str(getattr(request, "type", request.name)),
            queue=str((request.delivery_info or {}).get("routing_key")),
            score=(message.delivery_info or {}).get(ACCEPTED_SCORE),
        )  # fmt: skip

    def task_started(self, task: Any) -> None:
        """A thread starts the task (``SnakepoolTask.__call__``): recorded as started.
        Never raises (recording is observation)."""
        try:
            if (tag := _tag_of(task)) is not None:
                self.record.started(tag)
        except Exception:
            log.exception("recording a task as started failed")

    def task_done(self, task: Any) -> None:
        """The task has run (``SnakepoolTask.__call__``, on every path). Never raises."""
        try:
            if (tag := _tag_of(task)) is not None:
                self.record.finished(tag)
                request = task.request
                if (request.delivery_info or {}).get("redelivered"):
                    self.record.forget_deaths(str(request.id))
        except Exception:
            log.exception("recording a task as done failed")

    def _on_shutdown(self, sender: Any = None, **_: Any) -> None:
        held = self.record.held()
        if held:  # kombu restores these through the binding at exit: a survivor unbinds
            log.warning("stopping with %d messages held: %s's direct queue stays bound for "
                        "now (a survivor unbinds it)", len(held), self.node)  # fmt: skip
            return
        release_own_bindings(self.app, self.node)

    def _on_revoked(
        self, sender: Any = None, request: Any = None, expired: bool = False, **_: Any
    ) -> None:
        # Celery sends the request's Context here (no ``message``; the tag is among its
        # properties), not the Request the consumer had.
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        tag = _request_tag(request) if tag is None else str(tag)
        if tag is not None:
            self.record.finished(tag)
        if expired and is_shadow_task_id(getattr(request, "id", None)):
            # A copy that waited past its pair record (dispatch._deferred): discarded
            # unrun, counted beside the comparisons.
            try:
                self.heartbeats.hincrby(self.keys.shadow_counts, "expired", 1)
            except redis.RedisError as exc:
                log.debug("an expired shadow copy went uncounted: %s", exc)


def _tag_of(task: Any) -> str | None:
    return _request_tag(getattr(task, "request", None))


def _request_tag(request: Any) -> str | None:
    """The delivery tag among a task Context's ``properties`` (None: none there)."""
    properties = getattr(request, "properties", None)
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    return None if tag is None else str(tag)


class RecoveryStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs this worker's :class:`RecoveryService` (not with the embedded demo's
    in-memory broker, which has nothing to recover)."""

    # After the node (so it stops before the node stops its pool); by name, not by
    # import: the node's bootstep module installs this one.
    requires: ClassVar[set[str]] = {"snakepool.tasks.worker.bootstep:NodeStep"}

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
        """A warm stop (after the consumer's): wait for the started requests."""
        if self.service is not None:
            self.service.stop(grace=float(worker.app.snakepool_settings.shutdown_grace or 0))
            self.service = None
