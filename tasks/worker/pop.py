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
``HSET`` + ``LREM`` in one ``MULTI``). A dead incarnation's processing list is put back
on its queues by the survivor that settles it (``recovery/sweep.py``), uncounted (those
messages never started); a live node puts back what a lost reply left there.

Why this shape. ``BLMOVE`` (Redis ≥ 6.2) moves atomically but from ONE source list,
while a node consumes several: its lane *and* its own worker-direct queue
``<node>.dq2`` at least (``--lane all``: four). Redis has no blocking multi-list move
and no blocking wait that does not consume. Weighed:

- round-robin ``BLMOVE`` with short timeouts: delays every list but the current one;
- a non-consuming wait (``BLMOVE q q``, keyspace notifications, client tracking): one
  list per connection anyway (or server configuration), and it wakes *every* idle node
  for each message (a thundering herd that costs commands per request);
- one blocking ``BLMOVE`` per list, each on its own connection: exact and immediate,
  but alone it takes one message per list whenever several have a backlog, beyond the
  prefetch count (under load: every time).

So two modes per consuming channel:

- **take** (something may be queued): the :data:`TAKE` script moves the first message of all the
  channel's lists — in kombu's own order, priority then queue cycle — onto the
  processing list, in one non-blocking ``EVALSHA`` on the channel's connection (where
  kombu sent its BRPOP). Under load this is the only consuming command: one per message,
  as BRPOP was;
- **wait** (the last take found nothing): one :class:`Waiter` per list blocks on
  ``BLMOVE <list> <processing> RIGHT LEFT <brpop_timeout>`` on a connection of its own,
  driven by kombu's poller exactly like a channel's BRPOP. Redis serves the first
  message pushed to any list at once, to one node only. The first delivery goes back to
  take mode. A waiter's message that arrives when the node has no prefetch credit left
  (or is no longer consuming that queue) is given back to the head of its list.

Redis commands per message (measured on a V3 node, lane + direct queue, ``INFO
commandstats``, which counts a script's own calls too): the take's ``EVALSHA`` replaces
the BRPOP and runs one ``LMOVE`` per list it tries (2 here: kombu's queue cycle puts the
list just served last); one ``LREM`` joins kombu's ``MULTI`` — the same round trips,
+3 commands per request under backlog (all Redis commands of a request, router-less
``echo``: 30.9 → 34.0). After an idle wait, one more round trip: the ``EVALSHA`` take
that finds the lists empty before the node waits again (+4 for requests sent one at a
time: 34.0 → 37.9). While idle: one ``BLMOVE`` per list
per ``brpop_timeout`` (1 s), where kombu sent one BRPOP.

Limits, exactly: active only with our transport (``redis://`` broker URLs) and a
processing list (worker nodes, ``create_app(node=True)``), on Redis ≥ 6.2 and without
kombu's ``global_keyprefix`` — otherwise kombu's BRPOP, with its loss window; one
connection per consumed list (within kombu's ``max_connections`` per pool, 10, with the
BRPOP and pub/sub ones: up to 8 lists — our nodes consume at most 4, with
``priority_steps = [0]`` set by ``create_app``); one consuming channel per process at a
time (Celery's consumer; another would only cause a duplicate delivery, never a loss);
a message Redis serves to a waiter in the instant its channel closes stays on the list
until the process has exited and a survivor settles the incarnation (seconds).
"""

from __future__ import annotations

import hashlib
import logging
from time import monotonic, time
from typing import Any

import redis
from kombu.exceptions import InconsistencyError
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from snakepool.tasks.worker.pop_wait import Waiter

__all__ = ["GIVE_BACK", "TAKE", "ReliableChannel"]

log = logging.getLogger("snakepool.broker")

#: Move the first message of KEYS[2..] (in that order) onto KEYS[1], the processing list:
#: one LMOVE per list tried (the queue cycle puts the list just served last).
TAKE = """
for i = 2, #KEYS do
  local item = redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT')
  if item then
    return {KEYS[i], item}
  end
end
return false
"""
#: Give a message back: off KEYS[1] (the processing list), onto the head of KEYS[2] (the
#: right end, where consumers pop). 1 if moved, 0 if it was no longer there.
GIVE_BACK = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
_TAKE_SHA = hashlib.sha1(TAKE.encode(), usedforsecurity=False).hexdigest()
_FIRST_BLMOVE = (6, 2)


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel consuming through the reliable pop (module docstring).

    Transport option ``processing_list``: this node incarnation's processing list (None:
    kombu's BRPOP).
    """

    processing_list: str | None = None
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "processing_list")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reliable: bool | None = None
        self._waiting = False
        # A new channel first puts back what a lost reply left in the processing list.
        self._reclaim_due = bool(self.processing_list)
        self._waiters: dict[str, Waiter] = {}
        self._taken_item: bytes | None = None

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
            if _version(version) < _FIRST_BLMOVE:
                log.warning("Redis %s has no BLMOVE (6.2+): consuming with BRPOP (a message "
                            "taken as a node dies can be lost)", version)  # fmt: skip
                return False
            client.script_load(TAKE)
        return True

    def _pop_keys(self) -> list[str]:
        """The lists to consume, in kombu's BRPOP order (priority, then queue cycle)."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        return [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._reliable is None:
            self._reliable = self._check_reliable()
        if not self._reliable:
            super()._brpop_start(timeout)
            return
        if self._waiting or self._reclaim_due or self._closing:
            return  # the waiters block; or a reclaim comes first
        keys = self._pop_keys()
        if not keys:
            return
        connection = self.client.connection
        self._in_poll, self._brpop_sent_at = connection, monotonic()
        connection.send_command("EVALSHA", _TAKE_SHA, len(keys) + 1, self.processing_list, *keys)

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
                    client.script_load(TAKE)
                raise kombu_redis.Empty() from None
            if not reply:
                self._waiting = True  # all empty: block on each list
                raise kombu_redis.Empty()
            source, item = reply
            return self.taken(bytes_to_str(source), item)
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def blocking_wanted(self, key: str) -> bool:
        """Whether a waiter should (re)send its BLMOVE on ``key`` now."""
        return (
            self._waiting and not self._reclaim_due and not self._closing
            and self.qos.can_consume() and key in self._pop_keys()
        )  # fmt: skip

    def waiters_due(self) -> list[Waiter]:
        """Called by :class:`Poller` on each poll: reclaim if due, then the waiters to
        register (those not blocking yet send their BLMOVE)."""
        if not self._reliable or self._closing:
            return []
        if self._reclaim_due:
            if self._in_poll or any(w._in_poll for w in self._waiters.values()):
                return []  # a pending reply may still carry a message: wait for it
            try:
                self._reclaim()
            except self.connection_errors as exc:
                log.debug("reclaim postponed: %s", exc)
                return []
        if not (self._waiting and self.qos.can_consume()):
            return []
        return [self._waiters.get(k) or self._waiters.setdefault(k, Waiter(self, k))
                for k in self._pop_keys()]  # fmt: skip

    # -------------------------------------------------------------- messages

    def taken(self, source: str, item: bytes) -> bool:
        """A message is on the processing list, popped from ``source``: deliver it
        (kombu's ``_deliver``; :meth:`accept` records it), or give it back when this
        channel has no credit left or no longer consumes its queue.

        Raises:
            Empty: it was given back (or could not be read: dropped, logged).
        """
        queue = source.rsplit(self.sep, 1)[0]
        if self._closing or queue not in self.active_queues or not self.qos.can_consume():
            self._give_back(item, source)
            raise kombu_redis.Empty()
        self._waiting = False
        try:
            payload = loads(bytes_to_str(item))
        except (ValueError, TypeError):
            log.error("dropping a message that is not kombu's JSON from %s: %r", source,
                      item[:200])  # fmt: skip
            with self.conn_or_acquire() as client:
                client.lrem(self.processing_list, -1, item)
            raise kombu_redis.Empty() from None
        self._queue_cycle.rotate(queue)
        self._taken_item = item
        try:
            self.connection._deliver(payload, queue)
        finally:
            self._taken_item = None
        return True

    def accept(self, message: Any, delivery_tag: str) -> bool:
        """Record the message being delivered as unacknowledged the way kombu does and
        take it off the processing list, in one ``MULTI``; False when it did not come
        through the reliable pop (kombu's own ``QoS.append`` then).

        Raises:
            redis.ConnectionError: Redis is away: it stays on the processing list, to be
                put back on its queue once Redis answers (not delivered here).
        """
        item = self._taken_item
        if item is None:
            return False
        info = message.delivery_info
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
                pipe.hset(
                    self.unacked_key,
                    delivery_tag,
                    dumps([message._raw, info["exchange"], info["routing_key"]]),
                )
                pipe.lrem(self.processing_list, -1, item)
                pipe.execute()  # fmt: skip
        except self.connection_errors:
            self.reclaim_later()
            raise
        return True

    def _give_back(self, item: bytes, source: str) -> None:
        try:
            with self.conn_or_acquire() as client:
                client.eval(GIVE_BACK, 2, self.processing_list, source, item)
        except self.connection_errors:
            self.reclaim_later()

    def reclaim_later(self) -> None:
        """A reply was lost with its connection: put back whatever the processing list
        holds, once no other reply is pending."""
        if self._reliable:
            self._reclaim_due = True

    def _reclaim(self) -> None:
        with self.conn_or_acquire() as client:
            items = client.lrange(self.processing_list, 0, -1)
            for item in items:  # newest first: the oldest ends at the head of its list
                try:
                    home = self._home(item)
                except (ValueError, TypeError, KeyError):
                    log.error("dropping an unreadable message: %r", item[:200])
                    client.lrem(self.processing_list, -1, item)
                    continue
                client.eval(GIVE_BACK, 2, self.processing_list, home, item)
        if items:
            log.warning("%d message(s) whose reply was lost put back on their queues",
                        len(items))  # fmt: skip
        self._reclaim_due = False

    def _home(self, item: bytes) -> str:
        """The list a message on the processing list came from (its exchange and routing
        key, as kombu routes it)."""
        payload = loads(bytes_to_str(item))
        info = payload["properties"]["delivery_info"]
        try:
            queues = self._lookup(info["exchange"], info["routing_key"])
        except (InconsistencyError, KeyError):
            queues = []
        queue = sorted(queues)[0] if queues else info["routing_key"]
        return str(self._q_for_pri(queue, self._get_message_priority(payload, reverse=False)))

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


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return (0,)
