"""A survivor's sweep: a dead node's messages back on their queues, poison set aside.

Every node runs :meth:`Recovery.sweep` once a second (:mod:`.step`)::

    dead.lua     incarnations whose in-flight beat has expired (Redis clock)
      └─ for each, under a short lock (one survivor at a time):
         for each message in its record still unacknowledged *by that delivery*:
           settle.lua   HDEL unacked; count the death if it had started;
                        below POISON_THRESHOLD → RPUSH onto its queue, redelivered
                        at the threshold      → dead letter (+ DeadLettered to the caller)
         unpop.lua    each message still on its processing list (the reliable pop's,
                      tasks/worker/pop.py: taken, not yet recorded) → its queue, uncounted
         finish.lua   forget the incarnation (unless it beat again: it was only late)
    drain.lua    a gone node's worker-direct queue (<node>.dq2) → the v2compat lane
    bindings     a node gone for BINDING_GRACE_SECONDS loses its kombu bindings (.bindings)
    report       callers of new dead letters get DeadLettered

A message goes back to the queue its exchange and routing key name (kombu's lookup);
one sent to a dead node's direct queue goes to its lane instead, where any V2-compat
node rebinds its session and rebuilds its programs from the SessionStore. Delivery
stays at-least-once: the redelivered copy runs again unless its task id already has a
final result (:class:`~snakepool.tasks.worker.recovery.once.DeliveredOnce`).

Only a delivery that had *started* counts as a death against its request: a message
merely waiting in a dead node's prefetch did not kill it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import redis
from kombu.pidbox import Mailbox

from snakepool.config.keys import Keys
from snakepool.config.limits import (
    DEAD_LETTER_TTL,
    DELIVERY_HISTORY_TTL,
    MAX_DEAD_LETTERS,
    MAX_DELIVERY_HISTORY,
)
from snakepool.errors import InvalidArguments
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from snakepool.tasks.worker.node import node_alive
from snakepool.tasks.worker.recovery.bindings import GoneNodeBindings
from snakepool.tasks.worker.recovery.broker import BrokerRedis, Delivery, text
from snakepool.tasks.worker.recovery.deadletters import DeadLetterStore
from snakepool.tasks.worker.recovery.inflight import InflightEntry, read_record
from snakepool.tasks.worker.recovery.scripts import lua

__all__ = ["LOCK_SECONDS", "Recovery", "RecoveryReport", "SweepReport"]

log = logging.getLogger("snakepool.recovery")

#: Seconds a survivor may hold a dead incarnation's lock (it needs milliseconds).
LOCK_SECONDS = 30
#: Dead incarnations settled per sweep (the rest wait for the next second).
DEAD_PER_SWEEP = 10
#: Messages moved from one direct queue per sweep.
DRAIN_PER_SWEEP = 1000
#: Seconds (and sweeps) that set how often a gone node's direct queue is looked at.
DRAIN_WATCH_SECONDS = 60.0
#: Stands in for a task id that cannot name a key (such a message is never counted).
_UNNAMEABLE = "unnameable-task-id"
_LANE_OF_TASK = {task: lane for lane, task in LANE_TASKS.items()} | {ROUTE_TASK: ROUTER_QUEUE}


@dataclass
class RecoveryReport:
    """What settling one dead incarnation did."""

    incarnation: str
    node: str | None
    restored: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    skipped: int = 0


@dataclass
class SweepReport:
    """What one sweep did."""

    recovered: list[RecoveryReport] = field(default_factory=list)
    drained: int = 0
    reported: int = 0
    #: Gone nodes whose kombu bindings were removed.
    unbound: list[str] = field(default_factory=list)


class Recovery:
    """Settles dead nodes' messages (see the module docstring).

    Args:
        broker: The broker's Redis, through kombu.
        keys: Key builder.
        dead_letters: Where poison requests go (and who tells their callers).
        heartbeats: The Redis holding the nodes' heartbeats (``REDIS_URL``).
        threshold: ``POISON_THRESHOLD``.
        me: This node's own incarnation (never settled by itself).
        mailbox: Celery's control mailbox (``app.control.mailbox``): with it, gone
            nodes' bindings are removed too (:mod:`.bindings`).
    """

    def __init__(
        self,
        *,
        broker: BrokerRedis,
        keys: Keys,
        dead_letters: DeadLetterStore,
        heartbeats: redis.Redis,
        threshold: int,
        me: str | None = None,
        mailbox: Mailbox | None = None,
    ) -> None:
        self.broker = broker
        self.keys = keys
        self.dead_letters = dead_letters
        self.heartbeats = heartbeats
        self.threshold = threshold
        self.me = me
        client = broker.client
        self.client = client
        self._dead = client.register_script(lua("dead"))
        self._settle = client.register_script(lua("settle"))
        self._finish = client.register_script(lua("finish"))
        self._unpop = client.register_script(lua("unpop"))
        self._unlock = client.register_script(lua("unlock"))
        self._drain = client.register_script(lua("drain"))
        #: Gone node → when this survivor first saw it gone (monotonic clock).
        self._gone_since: dict[str, float] = {}
        self._drains = 0
        self.bindings = (
            GoneNodeBindings(
                broker, mailbox_queue=mailbox.get_queue,
                mailbox_exchange=str(mailbox.exchange.name), gone=self._gone,
            )
            if mailbox is not None
            else None
        )  # fmt: skip

    def sweep(self) -> SweepReport:
        """Settle every dead incarnation, drain gone nodes' direct queues, remove long-gone
        nodes' bindings, report."""
        report = SweepReport()
        for incarnation in self.dead():
            if incarnation != self.me:
                recovered = self.recover(incarnation)
                if recovered is not None:
                    report.recovered.append(recovered)
        report.drained = self.drain_direct_queues()
        if self.bindings is not None:
            report.unbound = self.bindings.sweep()
        report.reported = self.dead_letters.report()
        return report

    def dead(self) -> list[str]:
        """Incarnations whose in-flight beat has expired (oldest first)."""
        found = self._dead(keys=[self.keys.inflight_index], args=[DEAD_PER_SWEEP])
        return [text(i) for i in found]

    def recover(self, incarnation: str) -> RecoveryReport | None:
        """Settle one dead incarnation's messages; None if another survivor is on it."""
        lock, token = self.keys.recovery_lock(incarnation), uuid.uuid4().hex
        if not self.client.set(lock, token, nx=True, ex=LOCK_SECONDS):
            return None
        try:
            record = self.keys.inflight(incarnation)
            node, entries = read_record(self.client, record)
            report = RecoveryReport(incarnation, node)
            noticed = time.time()
            # Newest first: each goes to the head of its queue, so the oldest runs first.
            report.restored.extend(self._unpop_all(incarnation))  # taken after the others
            for tag, entry in sorted(entries.items(), key=_received, reverse=True):
                outcome, task_id = self._settle_one(record, node, tag, entry, noticed)
                if outcome == "restored":
                    report.restored.append(task_id)
                elif outcome == "deadlettered":
                    report.dead_lettered.append(task_id)
                else:
                    report.skipped += 1
            self._finish(
                keys=[self.keys.inflight_index, record, self.keys.processing(incarnation)],
                args=[incarnation],
            )
        finally:
            self._unlock(keys=[lock], args=[token])
        if report.restored or report.dead_lettered:
            log.warning(
                "node %s is gone: %d of its messages back on their queues, %d dead-lettered %s",
                node, len(report.restored), len(report.dead_lettered), report.dead_lettered,
            )  # fmt: skip
        return report

    def _settle_one(
        self, record: str, node: str | None, tag: str, entry: object, noticed: float
    ) -> tuple[str, str]:
        raw = self.client.hget(self.broker.unacked_key, tag)
        delivery = _decode(raw)
        if delivery is None or not isinstance(entry, InflightEntry):
            # Acknowledged meanwhile, or not ours to read: kombu's visibility timeout
            # remains the safety net for whatever we cannot parse.
            self.client.hdel(record, tag)
            return "skipped", ""
        queues = self._home(delivery)
        message = delivery.marked(redelivered=True)
        task_id = delivery.task_id
        try:
            deaths, letter = self.keys.deaths(task_id), self.keys.dead_letter(task_id)
            counted = entry.started is not None
        except InvalidArguments:
            deaths, letter = self.keys.deaths(_UNNAMEABLE), self.keys.dead_letter(_UNNAMEABLE)
            counted = False
        death = {"node": node, "received": entry.received, "started": entry.started,
                 "noticed": noticed}  # fmt: skip
        meta = {
            "task_id": task_id, "task": delivery.task_name, "queue": queues[0],
            "lane": _LANE_OF_TASK.get(delivery.task_name, queues[0]), "threshold": self.threshold,
            "command": delivery.command,
        }  # fmt: skip
        outcome, _count = self._settle(
            keys=[record, self.broker.unacked_key, self.broker.unacked_index_key, deaths, letter,
                  self.keys.dead_letter_index, self.keys.dead_letter_unreported,
                  *(self.broker.list_for(queue, message) for queue in queues)],
            args=[tag, entry.score, delivery.raw, json.dumps(message),
                  json.dumps(death) if counted else "", self.threshold, MAX_DELIVERY_HISTORY,
                  DELIVERY_HISTORY_TTL, DEAD_LETTER_TTL, MAX_DEAD_LETTERS, json.dumps(meta),
                  task_id, self.keys.dead_letter_prefix],
        )  # fmt: skip
        return text(outcome), task_id

    def _unpop_all(self, incarnation: str) -> list[str]:
        """Put back on its queue each message the incarnation's reliable pop had taken
        and not recorded (it never started: not counted); their task ids."""
        processing, moved = self.keys.processing(incarnation), []
        for raw in self.client.lrange(processing, 0, -1):  # newest first: oldest at the head
            try:
                delivery = Delivery.from_message(raw)
            except (ValueError, TypeError):
                log.error("an unreadable message on %s is dropped: %r", processing, raw[:200])
                continue
            home = self._home(delivery)
            lists = [self.broker.list_for(queue, delivery.message) for queue in home]
            moved_one = self._unpop(
                keys=[self.keys.inflight_index, processing, *lists], args=[incarnation, raw]
            )
            if moved_one == 1:
                moved.append(delivery.task_id)
        return moved

    def _home(self, delivery: Delivery) -> list[str]:
        """The queues a message goes back to: where it was sent, but a gone node's direct
        queue is its lane (nobody would ever consume it there)."""
        if delivery.is_direct and not self._alive(delivery.routing_key):
            return [_LANE_OF_TASK.get(delivery.task_name, "v2compat")]
        return self.broker.queues_for(delivery.exchange, delivery.routing_key) or [
            delivery.routing_key
        ]

    def _alive(self, node: str) -> bool:
        try:
            return node_alive(self.heartbeats, self.keys, node)
        except InvalidArguments:
            return False

    def _gone(self, nodes: list[str]) -> list[str]:
        """Those of ``nodes`` with no live heartbeat (one round trip)."""
        named = []
        for node in nodes:
            try:
                named.append((node, self.keys.node(node)))
            except InvalidArguments:
                continue  # not a name we would ever give a node: not ours to drain
        with self.heartbeats.pipeline(transaction=False) as pipe:
            for _node, key in named:
                pipe.exists(key)
            alive = pipe.execute()
        return [node for (node, _key), up in zip(named, alive, strict=True) if not up]

    def drain_direct_queues(self) -> int:
        """Move every gone node's direct-queue backlog to the v2compat lane; how many.

        The router sends a session's request to its node's direct queue only while that
        node's heartbeat lives, so a gone node's queue can fill only just after its
        death: it is looked at every sweep for ``DRAIN_WATCH_SECONDS`` after this
        survivor first saw it gone, then once every ``DRAIN_WATCH_SECONDS`` sweeps (node
        names pile up in kombu's bindings: each restart under a new name adds one).
        """
        direct = self.broker.direct_queues()
        now, self._drains = time.monotonic(), self._drains + 1
        gone_now = self._gone(sorted(direct))
        self._gone_since = {node: self._gone_since.get(node, now) for node in gone_now}
        gone = [
            (node, direct[node]) for node in gone_now
            if now - self._gone_since[node] <= DRAIN_WATCH_SECONDS
            or self._drains % int(DRAIN_WATCH_SECONDS) == 0
        ]  # fmt: skip
        if not gone:
            return 0
        lane_lists = self.broker.priority_lists("v2compat")
        pairs = [
            (source, target)
            for _node, queue in gone
            for source, target in zip(self.broker.priority_lists(queue), lane_lists, strict=True)
        ]
        with self.client.pipeline(transaction=False) as pipe:
            for source, _target in pairs:
                pipe.llen(source)
            lengths = pipe.execute()
        moved = 0
        for (source, target), length in zip(pairs, lengths, strict=True):
            if length:
                moved += int(self._drain(keys=[source, target], args=[DRAIN_PER_SWEEP]))
        if moved:
            log.warning("moved %d messages from gone nodes' direct queues to v2compat", moved)
        return moved


def _received(item: tuple[str, object]) -> float:
    entry = item[1]
    return entry.received if isinstance(entry, InflightEntry) else 0.0


def _decode(raw: bytes | str | None) -> Delivery | None:
    if raw is None:
        return None
    try:
        return Delivery.decode(raw)
    except (ValueError, TypeError):
        log.exception("an unacked message cannot be read; kombu will restore it in time")
        return None
