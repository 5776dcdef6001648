"""The reliable pop: a message leaves its queue only for a list a survivor can read.

The loss it removes (issue 9, items 1 and 3): kombu consumes with ``BRPOP q1 q2 …``. A
SIGKILLed node tears down its memory before the kernel closes its sockets, so for tens
of milliseconds Redis still sees the connection and serves the pending BRPOP to it: the
message is popped, written to a socket nobody reads, and is then neither on its queue
nor in kombu's ``unacked`` hash — nothing can bring it back. The same happens to any
reply lost with its connection (a Redis restart, a network cut).

Here a message only ever *moves*: from its queue into this node incarnation's
processing list ``{prefix}processing:<incarnation>`` (``Keys.processing``), atomically in
Redis, and from there into kombu's ``unacked`` hash (``QoS.append``: ``ZADD`` +
``HSET`` + ``LREM`` in one script). A dead incarnation's processing list is put back
on its queues by the survivor that settles it (``recovery/sweep.py``), uncounted (those
messages never started); a live node puts back what a lost reply left there.

Why this shape. ``BLMOVE`` (Redis ≥ 6.2) moves atomically but from ONE source list,
while a node consumes several (its lanes, its worker-direct queue ``<node>.dq2``, each
with a list of shadow copies). Redis has no blocking multi-list move and no blocking
wait that does not consume. Round-robin ``BLMOVE`` with short timeouts delays every list
but one; a non-consuming wait (``BLMOVE q q``, keyspace notifications, client tracking)
wakes *every* idle node for each message. Used, each where it fits:

- **wait** — the last take found every list empty, or the prefetch has room for one
  message from every list busy of late (1 s): one :class:`Waiter` per list blocks on
  ``BLMOVE <list> <processing> RIGHT LEFT <brpop_timeout>`` on a connection of its own,
  driven by kombu's poller exactly like a channel's BRPOP (and, like it, re-sent after
  each message while the prefetch has room). A lane node under load stays here: one
  BLMOVE per message, where kombu sent one BRPOP;
- **take** — several lists busy and little room: the :data:`TAKE` script moves up to
  the room's worth (at most :data:`MAX_TAKE`) from the first non-empty list, in
  kombu's own order (priority, then queue cycle), in one non-blocking ``EVALSHA`` on
  the channel's connection (where kombu sent its BRPOP).

The lists of shadow copies (priority 9) are offered only while live traffic leaves
room (:class:`~snakepool.tasks.worker.pop_defer.Deferral`).

A message that arrives when the node has no room left (or no longer consumes that
queue) is given back to the head of its list (rare: it takes a message on a list that
was quiet, at the instant the room ran out). The move into ``unacked`` is one script,
:data:`ACCEPT` (``ZADD`` + ``HSET`` + ``LREM``), in place of kombu's ``MULTI`` ``ZADD``
``HSET`` ``EXEC``; when its reply is lost it may have run, so the next reclaim also moves
the message from ``unacked`` back to its queue (:data:`RESTORE`), where it would
otherwise wait ``VISIBILITY_TIMEOUT`` delivered nowhere.

Redis commands per request: ``BLMOVE`` for ``BRPOP``; ``EVALSHA`` + ``LREM`` (+ ``ZSCORE``
+ ``HSET``: the in-flight entry) for ``MULTI`` + ``EXEC``. Idle: one ``BLMOVE`` per list
per ``brpop_timeout`` (1 s), where kombu sent one BRPOP for all.

A list Redis refuses to pop from (``OOM`` at ``maxmemory``, ``WRONGTYPE``) rests and is
tried again (:class:`~snakepool.tasks.worker.pop_wait.Refusals`): it never ends the node.

Limits, exactly: active only with our transport (``redis://`` broker URLs) and a processing
list (worker nodes, ``create_app(node=True)``), on Redis ≥ 6.2 and without kombu's
``global_keyprefix`` — otherwise kombu's BRPOP, with its loss window; one connection per
consumed list (two lists per queue, ``priority_steps = [0, 9]``; on top of kombu's
``max_connections``, 10, which still bounds the channel's own); one consuming channel per
process at a time (Celery's consumer; another would only cause a duplicate delivery, never
a loss); a message Redis serves to a waiter in the instant its channel closes stays on the
list until the process has exited and a survivor settles the incarnation (seconds).
"""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any, ClassVar

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from snakepool.tasks.worker import pop_scripts as scripts
from snakepool.tasks.worker.inflight_entry import ACCEPTED_SCORE, entry_fields
from snakepool.tasks.worker.pop_defer import Deferral, deferred_list
from snakepool.tasks.worker.pop_reclaim import give_back, reclaim
from snakepool.tasks.worker.pop_wait import Refusals, Waiter

__all__ = ["BUSY_SECONDS", "MAX_TAKE", "ReliableChannel"]

log = logging.getLogger("snakepool.broker")

#: At most this many messages per take.
MAX_TAKE = 8
#: A list that brought a message this recently counts as busy (see ``taken``).
BUSY_SECONDS = 1.0
#: Redis failing under a delivery (the message stays on the processing list, put back
#: later), as opposed to a message kombu cannot read (dropped).
_REDIS_TROUBLE = (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError)


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel consuming through the reliable pop (module docstring).

    Transport options ``processing_list``: this node incarnation's processing list (None:
    kombu's BRPOP); ``inflight_record``: its in-flight record, which ``ACCEPT`` writes
    each message's entry to (``tasks/worker/recovery/inflight.py``; None: the record
    writes it on ``task_received``).
    """

    processing_list: str | None = None
    inflight_record: str | None = None
    #: Processing list → delivery tag → message, for each ACCEPT whose reply was lost
    #: (it may have run: then the message is in ``unacked``, delivered nowhere). Kept
    #: per process, not per channel: Celery reconnects with a new channel.
    _unsure: ClassVar[dict[str, dict[str, bytes]]] = {}
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "processing_list",
        "inflight_record",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reliable: bool | None = None
        self._waiting = False
        # A new channel first puts back what a lost reply left in the processing list.
        self._reclaim_due = bool(self.processing_list)
        self._waiters: dict[str, Waiter] = {}
        self._taken_item: bytes | None = None
        self._accepted = False  # whether accept() recorded the message being delivered
        self._take = "take"
        #: List → when it last brought a message (monotonic clock).
        self._recent: dict[str, float] = {}
        self._empty = False  # whether the last take found every list empty
        #: When the lists of shadow copies may be read (tasks/worker/pop_defer.py).
        self.deferral = Deferral(deferred_list(""), self._hub)  # the lists' common end
        self._taken_deferred = False
        self.refusals = Refusals()  # lists Redis refused to pop from, resting

    def _hub(self) -> Any:
        return getattr(getattr(self.connection, "cycle", None), "hub", None)

    # --------------------------------------------------------------- the modes

    @property
    def pops_reliably(self) -> bool:
        """Whether this channel consumes through the reliable pop (known once it has
        started consuming)."""
        return self._reliable is True

    def _check_reliable(self) -> bool:
        if not self.processing_list:
            return False
        if self.global_keyprefix:
            log.warning("kombu's global_keyprefix is set: consuming with BRPOP (a message "
                        "taken as a node dies can be lost)")  # fmt: skip
            return False
        with self.conn_or_acquire() as client:
            version = str(client.info("server").get("redis_version", "0"))
            if not scripts.has_blmove(version):
                log.warning("Redis %s has no BLMOVE (6.2+): consuming with BRPOP (a message "
                            "taken as a node dies can be lost)", version)  # fmt: skip
                return False
            self._take = scripts.take_script(version)
            self._load_scripts(client)
        return True

    def _load_scripts(self, client: Any) -> None:
        client.script_load(scripts.TAKE if self._take == "take" else scripts.TAKE_62)
        client.script_load(scripts.ACCEPT)

    def _all_keys(self) -> list[str]:
        queues = self._queue_cycle.consume(len(self.active_queues))
        return [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]

    def _pop_keys(self) -> list[str]:
        """The lists to consume now, in kombu's BRPOP order (priority, then queue cycle);
        the deferred ones only while :class:`Deferral` opens them."""
        keys, deferral = self._all_keys(), self.deferral
        return keys if deferral.open() else [k for k in keys if not deferral.is_deferred(k)]

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._reliable is None:
            self._reliable = self._check_reliable()
        if not self._reliable:
            super()._brpop_start(timeout)
            return
        # Wait (a BLMOVE per list) when the last take found nothing, or while the
        # prefetch has room for a message from every list busy of late: each BLMOVE then
        # moves one message as BRPOP did. Else take (several lists busy, little room:
        # waiters would bring more than the room, to be given back).
        self._waiting = self._empty or self._room() >= self._busy()
        if self._waiting or self._reclaim_due or self._closing or self.refusals.resting("take"):
            return  # the waiters block; or a reclaim comes first; or Redis refused it
        # As many as the prefetch has room for (BRPOP would take them one by one), from
        # the live lists; copies only by the waiters, or one when starving (pop_defer.py).
        keys, deferral = self._all_keys(), self.deferral
        count, end = int(max(1, min(self._room(), MAX_TAKE))), "RIGHT"
        if deferral.probe_due():
            keys, count, end = [k for k in keys if deferral.is_deferred(k)], 1, "LEFT"
        else:
            keys = [k for k in keys if not deferral.is_deferred(k)]
        if not keys:
            return
        connection = self.client.connection
        self._in_poll, self._brpop_sent_at = connection, monotonic()
        connection.send_command("EVALSHA", scripts.SHA[self._take], len(keys) + 1,
                                self.processing_list, *keys, count, end)  # fmt: skip

    def _brpop_read(self, **options: Any) -> bool:
        if not self._reliable:
            result: bool = super()._brpop_read(**options)
            return result
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
            except self.connection_errors:
                self.reclaim_later()
                self.client.connection.disconnect()
                raise
            except redis.exceptions.NoScriptError:
                with self.conn_or_acquire() as client:  # flushed (a Redis restart)
                    self._load_scripts(client)
                raise kombu_redis.Empty() from None
            if not reply:
                self._empty = True  # all empty: block on each list
                raise kombu_redis.Empty()
            source, *items = reply
            delivered = [self.taken(bytes_to_str(source), item) for item in items]  # oldest first
            if not any(delivered):
                raise kombu_redis.Empty()
            return True
        except redis.ResponseError as refused:  # the take, or an ACCEPT: see Refusals
            self.refusals.refused("take", refused)  # (what was taken: the reclaim's)
            raise kombu_redis.Empty() from None
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def blocking_wanted(self, key: str) -> bool:
        """Whether a waiter should (re)send its BLMOVE on ``key`` now (``key`` is one of
        :meth:`_pop_keys`: its queue is consumed, and a deferred list is open)."""
        if self._reclaim_due or self._closing or not (self._waiting and self.qos.can_consume()):
            return False
        if key.split(self.sep, 1)[0] not in self._active_queues or self.refusals.resting(key):
            return False  # not consumed (kombu's key: <queue><sep><pri>), or refused
        return not self.deferral.is_deferred(key) or self.deferral.open()

    def waiters_due(self) -> list[Waiter]:
        """Called by :class:`Poller` on each poll: reclaim if due, then the waiters to
        register and start (one whose BLMOVE is pending is left alone: it is registered,
        and a lost connection clears its pending state)."""
        if not self._reliable or self._closing:
            return []
        if self._reclaim_due:
            if self._in_poll or any(w._in_poll for w in self._waiters.values()):
                return []  # a pending reply may still carry a message: wait for it
            if self.refusals.resting("the reclaim"):
                return []
            try:
                reclaim(self, self._unsure.get(str(self.processing_list), {}))
                self._reclaim_due = False
            except _REDIS_TROUBLE as exc:  # Redis away, or refusing writes (OOM)
                if isinstance(exc, redis.ResponseError):
                    self.refusals.refused("the reclaim", exc)
                log.debug("reclaim postponed: %s", exc)
                return []
        if not (self._waiting and self.qos.can_consume()):
            return []
        waiters = (self._waiter(key) for key in self._pop_keys())
        return [waiter for waiter in waiters if not waiter._in_poll]

    def _waiter(self, key: str) -> Waiter:
        """``key``'s waiter. Its connection comes from the channel's async pool, on top
        of kombu's ``max_connections``, which keeps counting the channel's own (BRPOP,
        pub/sub): a node consuming two lists per queue, more queues (``add_consumer``)
        than the limit has room for would otherwise reconnect for ever on
        ``MaxConnectionsError``."""
        waiter = self._waiters.get(key)
        if waiter is None:
            pool = self.async_pool
            pool.max_connections = max(
                pool.max_connections, self.max_connections + len(self._waiters) + 1
            )
            waiter = self._waiters[key] = Waiter(self, key)
        return waiter

    # -------------------------------------------------------------- messages

    def taken(self, source: str, item: bytes) -> bool:
        """A message is on the processing list, popped from ``source``: deliver it
        (kombu's ``_deliver``; :meth:`accept` records it), or give it back when this
        channel has no credit left or no longer consumes its queue. Whether delivered
        (False: given back, or not kombu's JSON: dropped, logged).
        """
        queue = source.rsplit(self.sep, 1)[0]
        deferred = self.deferral.is_deferred(source)
        if (
            self._closing or queue not in self.active_queues or not self.qos.can_consume()
            or (deferred and not self.deferral.open())
        ):  # fmt: skip
            give_back(self, item, source)
            return False
        try:
            payload = loads(bytes_to_str(item))
        except (ValueError, TypeError, RecursionError):  # nested too deeply: RecursionError
            log.error("dropping a message that is not kombu's JSON from %s: %r", source,
                      item[:200])  # fmt: skip
            with self.conn_or_acquire() as client:
                client.lrem(self.processing_list, -1, item)
            return False
        self._queue_cycle.rotate(queue)
        self._taken_item, self._accepted, self._taken_deferred = item, False, deferred
        try:
            self.connection._deliver(payload, queue)
        except Exception as exc:
            # Raised before :meth:`accept` recorded it: kombu could not make a message of
            # it (JSON, not kombu's shape). Raised on, it stopped the node, and the next
            # node to take it after the sweep put it back.
            if self._accepted or isinstance(exc, _REDIS_TROUBLE):
                raise
            log.error("dropping a message that is not kombu's from %s (%r): %r", source,
                      exc, item[:200])  # fmt: skip
            with self.conn_or_acquire() as client:
                client.lrem(self.processing_list, -1, item)
            return False
        finally:
            self._taken_item = None
        self._recent[source], self._empty = monotonic(), False
        return True

    def _busy(self) -> int:
        """How many lists brought a message of late (at least 1)."""
        now = monotonic()
        return max(1, sum(1 for at in self._recent.values() if now - at < BUSY_SECONDS))

    def _room(self) -> float:
        """Messages this channel may still take within its prefetch count."""
        qos = self.qos
        if not qos.prefetch_count:
            return float("inf")
        return float(qos.prefetch_count - (len(qos._delivered) - len(qos._dirty)))

    def accept(self, message: Any, delivery_tag: str) -> bool:
        """Record the message being delivered as unacknowledged the way kombu does, take
        it off the processing list and, with ``inflight_record``, write its in-flight
        entry (its score then left in ``delivery_info[ACCEPTED_SCORE]``), in one script
        (:data:`ACCEPT`); False when it did not come through the reliable pop (kombu's
        own ``QoS.append`` then).

        Raises:
            redis.ConnectionError, redis.ResponseError: Redis away or refusing: put back
                (from the processing list, or ``unacked``) once Redis answers.
        """
        item = self._taken_item
        if item is None:
            return False
        info = message.delivery_info
        value = dumps([message._raw, info["exchange"], info["routing_key"]])
        keys: tuple[Any, ...] = (self.unacked_index_key, self.unacked_key, self.processing_list)
        now = time()
        args: tuple[Any, ...] = (delivery_tag, repr(now), value, item)
        if self.inflight_record:
            headers = message.headers or {}
            keys += (self.inflight_record,)
            args += (entry_fields(str(headers.get("id")), str(headers.get("task")),
                                  str(info["routing_key"]), now),)  # fmt: skip
        try:
            with self.conn_or_acquire() as client:
                try:
                    score = client.evalsha(scripts.SHA["accept"], len(keys), *keys, *args)
                except redis.exceptions.NoScriptError:  # flushed (a Redis restart)
                    score = client.eval(scripts.ACCEPT, len(keys), *keys, *args)
        except (*self.connection_errors, redis.ResponseError):  # a WRONGTYPE: run in part
            self._unsure.setdefault(str(self.processing_list), {})[delivery_tag] = item
            self.reclaim_later()
            raise
        if self.inflight_record:
            info[ACCEPTED_SCORE] = bytes_to_str(score)
        self._accepted = True
        self.deferral.taken(delivery_tag, deferred=self._taken_deferred)
        return True

    def reclaim_later(self) -> None:
        """Put back what the processing list holds once no other reply is pending."""
        if self._reliable:
            self._reclaim_due = True

    def _on_connection_disconnect(self, connection: Any) -> None:
        if self._reliable and self._in_poll is connection:
            self.reclaim_later()
        for waiter in self._waiters.values():
            if waiter._in_poll is connection:
                waiter._in_poll = None
                self.reclaim_later()
        super()._on_connection_disconnect(connection)

    def close(self) -> None:
        """Close, forgetting the waiters (kombu disconnects their pool)."""
        self._closing = True
        super().close()
        self._waiters.clear()
