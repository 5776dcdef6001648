"""What a node has received and not finished: its in-flight record in the broker's Redis.

kombu's ``unacked`` hash says which messages are taken, not by whom, so a dead node's
messages wait there for ``VISIBILITY_TIMEOUT`` (an hour by default). Each node therefore
keeps its own record, one hash per *incarnation* (one run of a node: a node restarted
under the same name is another one)::

    consumer thread  the reliable pop's   ZADD unacked_index, HSET unacked, LREM processing,
                     ACCEPT script        HSET inflight:<inc> <tag> "<score> <json>"
    the task starts  (worker thread)      HSET … the same, now with "started"
    the ack          (kombu's MULTI)      ZREM unacked_index, HDEL unacked,
                                          HDEL inflight:<inc> <tag>   (``broker.QoS``)
    every second     (recovery thread)    beat.lua: ZADD inflight <now + HEARTBEAT_TTL> <inc>
                                          (and the TTL of processing:<inc>)
    every 10 s                            prune.lua: drop what kombu no longer holds as ours

So a message enters the record in the same script that makes it unacknowledged, and
leaves it in the same transaction that acknowledges (or requeues) it: the record costs
one command per request of its own, the "started" write, sent on a connection of its
own without waiting for the reply (:mod:`~snakepool.tasks.worker.recovery.pipelined`).
A message that did not come through the reliable pop (kombu's BRPOP: old Redis,
``global_keyprefix``) is recorded on ``task_received`` by ``record.lua`` and removed once
it has run by an ``HDEL``, both sent the same way. (A thread starting and ending a task
reaches the record through ``SnakepoolTask.__call__``: ``recovery/step.py``.)

``<score>`` is the message's ``unacked_index`` score for this delivery (kombu's receipt
time), copied inside Redis: a survivor moves a message only while that score is still
the same, so it never takes a later delivery of it on another node. Bounded: one entry
per message held (at most the prefetch count; an entry whose acknowledgement never came
goes at the next prune once kombu no longer holds the message); the hash's TTL is
``VISIBILITY_TIMEOUT``, refreshed by the beat, after which kombu restores anyway.

Recording is observation: it never changes a request's outcome. A Redis error is logged;
should the node then die, that message comes back only after ``VISIBILITY_TIMEOUT``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import redis

from snakepool.config.keys import Keys
from snakepool.errors import InvalidArguments
from snakepool.tasks.worker.inflight_entry import InflightEntry
from snakepool.tasks.worker.node import HEARTBEAT_TTL
from snakepool.tasks.worker.recovery.broker import text
from snakepool.tasks.worker.recovery.pipelined import OnReply, Pipelined
from snakepool.tasks.worker.recovery.scripts import lua

__all__ = ["NODE_FIELD", "PRUNE_EVERY", "InflightEntry", "InflightRecord", "read_record"]

log = logging.getLogger("snakepool.recovery")

#: Beats between two prunes of the record.
PRUNE_EVERY = 10
#: The hash field naming the node (every other field is a delivery tag).
NODE_FIELD = "~node"


class InflightRecord:
    """This node's in-flight record (see the module docstring).

    Args:
        client: The broker's Redis.
        keys: Key builder (the settings' prefix).
        node: This node's name (``name@host``).
        unacked_index_key: kombu's ``unacked_index`` (``BrokerRedis.unacked_index_key``).
        ttl: Seconds without a beat after which this node counts as dead.
        keep: Seconds the record lives without a beat (``VISIBILITY_TIMEOUT``).
        incarnation: This run's id (32 hex digits; ``app.snakepool_incarnation``, which
            names the processing list of its reliable pop too); None: a new one.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        node: str,
        unacked_index_key: str,
        ttl: float = HEARTBEAT_TTL,
        keep: int = 3600,
        incarnation: str | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self.incarnation = incarnation or uuid.uuid4().hex
        self.key = keys.inflight(self.incarnation)
        self.processing = keys.processing(self.incarnation)
        self.ttl = ttl
        self.keep = keep
        self._unacked_index = unacked_index_key
        self._held: dict[str, InflightEntry] = {}
        self._lock = threading.Condition()
        self._beats = 0
        self._record = client.register_script(lua("record"))
        self._beat = client.register_script(lua("beat"))
        self._prune = client.register_script(lua("prune"))
        #: started (and received / finished without ACCEPT): not waiting for replies.
        self._writes = Pipelined(client)

    # ---------------------------------------------------------- message events

    def received(
        self, tag: str, *, task_id: str, task: str, queue: str, score: str | None = None
    ) -> None:
        """The consumer took the message ``tag`` (kombu has just put it in unacked).

        Args:
            score: Its ``unacked_index`` score when the reliable pop's ``ACCEPT`` has
                already written its entry (``message.delivery_info[ACCEPTED_SCORE]``):
                nothing is sent, and its acknowledgement removes it. None: recorded here
                by ``record.lua``, sent without waiting (see
                :mod:`~snakepool.tasks.worker.recovery.pipelined`): the message goes to a
                worker thread at once; the reply is read by the next event.
        """
        if score is not None:  # not replace(): this is per request
            accepted = InflightEntry(score, task_id, task, queue, time.time(), None, True)
            with self._lock:
                self._held[tag] = accepted
            return
        entry = InflightEntry("", task_id, task, queue, time.time())
        keys = [self.key, self._unacked_index]
        args = [tag, entry.encode().partition(" ")[2]]

        def recorded(score: Any) -> None:
            if isinstance(score, redis.exceptions.NoScriptError):  # Redis lost its scripts
                try:
                    score = self._record(keys=keys, args=args)  # loads it, then runs it
                except redis.RedisError as exc:
                    score = exc
            if isinstance(score, redis.RedisError):
                log.warning("could not record message %s as in flight: %s", tag, score)
            elif score is not None:  # None: already acknowledged, nothing to recover
                with self._lock:
                    self._held[tag] = replace(entry, score=text(score))

        self._send("record", tag, "EVALSHA", self._record.sha, len(keys), *keys, *args,
                   on_reply=recorded)  # fmt: skip

    def started(self, tag: str) -> None:
        """A thread begins running the message ``tag``: its death now counts against it.

        Written to Redis before the task runs (sent, not waited for)."""
        if tag not in self._held:
            self._settle()  # the reply of its ``record.lua``: its entry and score
        with self._lock:
            entry = self._held.get(tag)
            if entry is None:
                return
            entry = self._held[tag] = InflightEntry(  # not replace(): this is per request
                entry.score, entry.task_id, entry.task, entry.queue, entry.received,
                time.time(), entry.removed_by_ack,
            )  # fmt: skip
        self._send("started", tag, "HSET", self.key, tag, entry.encode())

    def finished(self, tag: str) -> None:
        """The message ``tag`` is done (acknowledged right after, or revoked)."""
        if tag not in self._held:
            self._settle()
        with self._lock:
            held = self._held.pop(tag, None)
            self._lock.notify_all()
        if held is None or held.removed_by_ack:
            return
        self._send("finished", tag, "HDEL", self.key, tag)  # if lost, the next prune drops it

    def _send(self, what: str, tag: str, *command: Any, on_reply: OnReply | None = None) -> None:
        """Send one command of the record on its own connection; never raises."""

        def logged(reply: Any) -> None:
            if isinstance(reply, redis.RedisError):
                log.warning("could not record message %s as %s: %s", tag, what, reply)

        try:
            self._writes.send(*command, on_reply=on_reply or logged)
        except redis.RedisError as exc:
            log.warning("could not record message %s as %s: %s", tag, what, exc)

    def _settle(self) -> None:
        """Read the replies of what was sent (so ``_held`` knows every message)."""
        try:
            self._writes.settle()
        except redis.RedisError as exc:
            log.warning("could not read the in-flight record's replies: %s", exc)

    def forget_deaths(self, task_id: str) -> None:
        """A redelivered request finished: its count of node deaths is of no more use."""
        try:
            self.client.delete(self.keys.deaths(task_id))
        except (redis.RedisError, InvalidArguments) as exc:
            log.warning("could not clear the deaths of %s: %s", task_id, exc)

    # ----------------------------------------------------------- the heartbeat

    def beat(self) -> None:
        """Say this node is alive for ``ttl`` more seconds; prune every ``PRUNE_EVERY``.

        Raises:
            redis.RedisError: Redis could not be reached (the caller logs it).
        """
        self._settle()  # the replies of the last requests' writes, read here when idle
        self._beat(
            keys=[self.keys.inflight_index, self.key, self.processing],
            args=[self.incarnation, self.ttl, self.keep, self.node],
        )
        self._beats += 1
        if self._beats % PRUNE_EVERY == 0:
            self.prune()

    def prune(self) -> list[str]:
        """Drop entries of messages kombu no longer holds for this delivery; their tags.

        Also forgets the messages whose ``ACCEPT`` entry their acknowledgement removed
        without a ``finished`` here (a revoke, a restore; never one started: its
        ``finished`` comes from ``SnakepoolTask.__call__``), which the script cannot
        see: entries listed before the record is read, each dropped only if it is still
        the very entry listed (not one started, received meanwhile or delivered here
        again since).
        """
        with self._lock:
            unstarted = {
                t: e for t, e in self._held.items() if e.removed_by_ack and e.started is None
            }
        dropped = [text(t) for t in self._prune(keys=[self.key, self._unacked_index])]
        present = {text(t) for t in self.client.hkeys(self.key)} if unstarted else set()
        with self._lock:
            for tag in dropped:
                self._held.pop(tag, None)
            for tag, entry in unstarted.items():
                if tag not in present and self._held.get(tag) is entry:
                    del self._held[tag]
            self._lock.notify_all()
        return dropped

    # ------------------------------------------------------------------ reading

    def held(self) -> dict[str, InflightEntry]:
        """The messages this process believes it holds (tag → entry)."""
        self._settle()
        with self._lock:
            return dict(self._held)

    def wait_for_started(self, timeout: float) -> bool:
        """Wait until no message this node started is still running; whether none is."""
        self._settle()
        with self._lock:
            return self._lock.wait_for(
                lambda: all(e.started is None for e in self._held.values()), timeout
            )


def read_record(client: redis.Redis, key: str) -> tuple[str | None, dict[str, Any]]:
    """A record's node name and its entries (tag → :class:`InflightEntry`, or the raw
    value when it does not parse)."""
    fields = {text(k): v for k, v in client.hgetall(key).items()}
    node = fields.pop(NODE_FIELD, None)
    entries: dict[str, Any] = {}
    for tag, value in fields.items():
        try:
            entries[tag] = InflightEntry.decode(value)
        except (ValueError, TypeError):
            entries[tag] = value
    return (None if node is None else text(node)), entries
