"""The broker transport: kombu's Redis transport, made to survive a Redis restart.

Issue 9 item 6 ("a node died with a kombu AttributeError while reconnecting"), as
reproduced by ``tests/chaos/test_redis_restart.py``: when a worker loses Redis, Celery's
consumer first *collects* the connection (kombu sets ``transport.client = None``) and
then closes it. Closing a Redis channel restores its unacknowledged messages — the
requests still running, with late acks — through a fresh connection pool, whose
settings kombu reads from ``transport.client``::

    Channel.close ─► QoS.restore_unacked ─► Channel._create_client ─► Channel.pool
      ─► Channel._connparams: transport.client.hostname ─► AttributeError

Only connection errors are expected there, so the ``AttributeError`` stops the worker
("Unrecoverable error"). The same path breaks the late acknowledgement of every request
that was running across the outage (``Message.ack`` → ``QoS.ack`` → ``_connparams``).

(A channel kombu has closed, ``channel.connection = None``, fails the same way: a
router's retried publish met one during a restart.)

:class:`Channel` remembers the transport and the connection settings it was opened with
and uses them once it is closed or its transport collected: the restore then fails as a
plain connection error
while Redis is down (ignored, as kombu intends), and the acknowledgements made after
Redis is back reach it — so a request that ran across a restart is neither lost nor run
a second time an hour later (``VISIBILITY_TIMEOUT``).

Two more ways a message went missing across a restart, both in :class:`QoS`:

- the restore on a lost connection fails while Redis is down, and kombu never tries
  again: a message the node had taken but not started stayed in the ``unacked`` hash,
  handed out again only after ``VISIBILITY_TIMEOUT`` (an hour) — lost to its caller.
  Those messages are now requeued as soon as Redis answers — all but the ones running
  here when the connection was lost (their own acknowledgement settles them);
- ``BRPOP`` took a message off its queue and Redis went away before kombu recorded it as
  unacknowledged: the message existed only in the node, and the error dropped it. On a
  worker node it now never exists only in the node: the reliable pop
  (:mod:`~snakepool.tasks.worker.pop`) moves it onto the node's processing list, where it
  stays — and goes back on its queue once Redis answers — until it is recorded in
  ``unacked``. Without the reliable pop (kombu's BRPOP) it is delivered anyway and runs
  here (its result is stored once Redis is back).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery.worker import state as worker_state
from kombu.exceptions import OperationalError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import json

from snakepool.tasks.worker.pop import ReliableChannel
from snakepool.tasks.worker.pop_wait import Poller

__all__ = ["REQUEUE_FOR_SECONDS", "Channel", "QoS", "Transport", "transport_for"]

log = logging.getLogger("snakepool.broker")

#: kombu's name for this module's transport (``broker_transport``).
_PATH = f"{__name__}:Transport"
#: How long messages whose restore failed are retried (then VISIBILITY_TIMEOUT's turn).
REQUEUE_FOR_SECONDS = 600.0
#: Seconds between two attempts.
_REQUEUE_EVERY = 1.0
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)
_lock = threading.Lock()


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's Redis QoS, which no longer drops a message when Redis goes away under it
    (see the module docstring)."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """Record a delivered message as unacknowledged (in Redis, and here).

        Raises:
            redis.ConnectionError: it came through the reliable pop and Redis is away: it
                stays on the node's processing list, put back on its queue later.
        """
        if self.channel.accept(message, delivery_tag):  # the reliable pop's (pop.py)
            virtual.QoS.append(self, message, delivery_tag)
            return
        try:
            super().append(message, delivery_tag)
        except _UNREACHABLE as exc:
            # Off its queue, not in ``unacked``: it exists only here now. Run it here.
            log.warning("message %s taken as Redis went away (%s): running it here",
                        delivery_tag, exc)  # fmt: skip
            virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack; then the channel's shadow deferral hears the message settled (even
        when the ack raised: the message no longer runs here).

        Redis refusing kombu's ``MULTI`` raised out of the worker's event loop: the node
        exited ("Unrecoverable error"). At ``maxmemory`` (``noeviction``) Redis refuses
        every command queued in a ``MULTI``; a key of it that is not of its type
        (``WRONGTYPE``) fails its command. The removals (``ZREM``, ``HDEL``: they free
        memory, so Redis takes them) are then sent without the ``MULTI``, each on its own;
        one still refused is logged (a stale entry, which the in-flight record's prune
        or kombu's visibility timeout clears).
        """
        try:
            try:
                super().ack(delivery_tag)
            except redis.ResponseError as refused:
                with self.channel.conn_or_acquire() as client:
                    pipe = self._remove_from_indices(delivery_tag, client.pipeline(False))
                    errors = [r for r in pipe.execute(raise_on_error=False)
                              if isinstance(r, Exception)]  # fmt: skip
                log.warning("acknowledging %s: Redis refused its MULTI (%s)%s", delivery_tag,
                            refused, f", then {errors[0]}" if errors else "")  # fmt: skip
                virtual.QoS.ack(self, delivery_tag)
        finally:
            self.channel.deferral.settled(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """kombu's reject; then the channel's shadow deferral hears the message settled
        (even when the reject raised)."""
        try:
            super().reject(delivery_tag, requeue=requeue)
        finally:
            self.channel.deferral.settled(delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's removal from ``unacked`` and its index (in the ``MULTI`` of an ack, a
        reject or a restore), plus the message's entry in this node's in-flight record,
        which the reliable pop's ``ACCEPT`` wrote (``tasks/worker/recovery/inflight.py``):
        the record leaves Redis in the same transaction as the message leaves ``unacked``,
        for no command of the record's own."""
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        record = self.channel.inflight_record
        return pipe.hdel(record, delivery_tag) if record else pipe

    def restore_unacked(self, client: Any = None) -> None:
        """Requeue every unacknowledged message (a lost connection, a shutdown); with
        Redis away, requeue the ones not running here in the background once it answers.

        The ones running here are left alone: each is acknowledged when it ends (Celery
        defers acks to its event loop, which waits for the reconnection), so requeuing
        them would run them twice.
        """
        try:
            super().restore_unacked(client)
        except _UNREACHABLE as exc:
            running = {request.id for request in tuple(worker_state.active_requests)}
            left = {
                tag: message
                for tag, message in self._delivered.items()
                if (message.headers or {}).get("id") not in running
            }
            log.warning("Redis away (%s): %d unacknowledged message(s) not started here are "
                        "requeued once it is back; %d running here", exc, len(left),
                        len(self._delivered) - len(left))  # fmt: skip
            self._delivered.clear()
            if left:
                threading.Thread(
                    target=self._requeue_later, args=(left,), name="snakepool-requeue",
                    daemon=True,
                ).start()  # fmt: skip

    def _requeue_later(self, left: dict[str, Any]) -> None:
        # This channel is closed (no transport to route with): requeue through a new one.
        opened_with = getattr(self.channel, "_opened_with", None)
        deadline = time.monotonic() + REQUEUE_FOR_SECONDS
        while left and opened_with is not None and time.monotonic() < deadline:
            try:
                with opened_with.clone() as connection:
                    channel = connection.channel()
                    for tag in list(left):
                        _requeue(channel, tag)
                        del left[tag]
                    channel.close()
            except (*_UNREACHABLE, OperationalError):
                pass  # still away
            if left:
                time.sleep(_REQUEUE_EVERY)
        if left:
            log.error("%d message(s) not requeued: VISIBILITY_TIMEOUT will", len(left))


def _requeue(channel: Any, tag: str) -> None:
    """Put the unacknowledged message ``tag`` back on its queue (none: it was acknowledged
    or requeued meanwhile). Our exchanges are all direct (Celery's queues, worker-direct)."""
    raw = channel.client.hget(channel.unacked_key, tag)
    if raw is None:
        return
    _, exchange, _ = json.loads(raw)
    if exchange:  # a new channel knows no exchange: kombu routes by the exchange's type
        channel.exchange_declare(exchange=exchange, type="direct")
    channel.qos.restore_by_tag(tag)


class Channel(ReliableChannel):
    """kombu's Redis channel, usable for acks, restores and publishes after it was closed
    or its transport collected, with :class:`QoS` (see the module docstring)."""

    QoS = QoS
    #: kombu's transport of this channel; None once the channel is closed.
    connection: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sync_client: Any = None
        super().__init__(*args, **kwargs)
        # The transport and the kombu Connection (URL, credentials, TLS) it was opened
        # with: a closed channel loses the first, a collected transport the second.
        self._opened_on = self.connection
        self._opened_with = self.connection.client

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's redis-py client for a publish, an ack or a restore: one per pool.

        kombu builds a new ``redis.Redis`` for every one of those, and its ``__init__``
        (a table of ~170 response callbacks) was ~10 % of a node's CPU and of a client's
        ``submit``. A client holds no connection of its own — each command takes one
        from the pool and gives it back — so threads can share it; a new pool (after a
        lost connection) gets a new client.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is not None:
            params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
            return params
        if self._opened_with is None:
            raise redis.ConnectionError("this broker channel has no connection settings left")
        # Closed, or collected after a lost connection: borrow back what it was opened
        # with, for this call only (a late ack, a restore, a retried publish).
        with _lock:
            saved = self.connection, self._opened_on.client
            self.connection = self._opened_on
            self._opened_on.client = self._opened_with
            try:
                params = super()._connparams(asynchronous=asynchronous)
            finally:
                self.connection, self._opened_on.client = saved
        return params


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel` and the reliable pop's poller."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's, with the event loop made known to the poller (``Poller.fds``)."""
        self.cycle.hub = loop
        super().register_with_event_loop(connection, loop)


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` for ``broker_url``: this module's for ``redis://``, None
    (kombu's own, from the URL) for anything else (``rediss://`` keeps kombu's TLS
    defaults, ``sentinel://`` and ``redis+socket://`` their own transports)."""
    return _PATH if broker_url.lower().startswith("redis://") else None
