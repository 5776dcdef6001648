"""A node's entries in kombu's binding tables go when the node goes.

kombu's Redis transport keeps, per exchange, the set of its bindings (routing key,
pattern, queue), and for queues without ``x-expires`` a second set the binding sweep
honours::

    _kombu.binding.<exchange>            looked up for every message published there
    _kombu.binding_permanent.<exchange>  the bindings of queues that never expire

Every node adds one binding to each of two exchanges: its worker-direct queue
``<node>.dq2`` on ``C.dq2`` (both sets), and its control queue
``<node>.celery.pidbox`` on ``celery.pidbox`` (expiring: only the first set; kombu
removes it when the node's channel closes cleanly). Nothing else ever removes them, so
without this module both tables grow by one member per node name ever started (and
``snakepool worker`` names a node after its pid by default).

A binding may go only once nothing routes to it any more — kombu drops a message
published to an exchange with no matching binding — and the router sends to a node's
direct queue only while the node's heartbeat lives:

- **a clean stop** (:func:`release_own_bindings`, on Celery's ``worker_shutdown``: after
  the node's heartbeat is deleted): the node removes its direct-queue binding, then moves
  what is still queued there to the ``v2compat`` lane — unless it still holds messages
  (a request outlived the shutdown grace): kombu puts those back through the binding
  when the process ends, so the binding is left for a survivor to remove;
- **a death** (:class:`GoneNodeBindings`, in every survivor's sweep): once a node has
  had no heartbeat for ``BINDING_GRACE_SECONDS`` — far longer than a router takes
  between reading a heartbeat and publishing — both its bindings are removed and its
  direct queue drained once more; if it is back by then (restarted under its name), what
  was removed is put back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct
from kombu import Queue

from snakepool.tasks.worker.recovery.broker import BrokerRedis
from snakepool.tasks.worker.recovery.scripts import lua

__all__ = ["BINDING_GRACE_SECONDS", "GoneNodeBindings", "release_own_bindings"]

log = logging.getLogger("snakepool.recovery")

#: Seconds a node must have been gone (no heartbeat) before its bindings are removed.
BINDING_GRACE_SECONDS = 10.0
#: Messages moved from one direct queue at once.
_DRAIN_BATCH = 1000


def _drain(broker: BrokerRedis, queue: str, lane: str = "v2compat") -> int:
    """Move everything queued on ``queue`` to ``lane``, priority by priority; how many."""
    script = broker.client.register_script(lua("drain"))
    moved = 0
    pairs = zip(broker.priority_lists(queue), broker.priority_lists(lane), strict=True)
    for source, target in pairs:
        while count := int(script(keys=[source, target], args=[_DRAIN_BATCH])):
            moved += count
    return moved


def _unbind(broker: BrokerRedis, queues: list[Queue]) -> list[tuple[str, str]]:
    """Remove each queue's binding from kombu's tables; the (table, member) removed."""
    removed = []
    for queue in queues:
        tables, member = broker.binding(queue)
        removed += [(table, member) for table in tables if broker.client.srem(table, member)]
    return removed


def release_own_bindings(app: Celery, node: str) -> int:
    """A clean stop: remove ``node``'s direct-queue binding, then move what is queued on
    its direct queue to the ``v2compat`` lane. Call it once the node's heartbeat is gone.

    Never raises: a node stops whatever Redis says (a survivor removes the binding later).

    Args:
        app: The node's Celery app.
        node: The node's name (``name@host``).

    Returns:
        How many messages were moved to the lane.
    """
    if not BrokerRedis.supports(app):
        return 0
    try:
        broker = BrokerRedis(app)
    except (ValueError, redis.RedisError):
        return 0
    try:
        direct = worker_direct(node)
        _unbind(broker, [direct])
        moved = _drain(broker, direct.name)
    except redis.RedisError as exc:
        log.warning("could not remove %s's direct-queue binding: %s", node, exc)
        return 0
    finally:
        broker.close()
    if moved:
        log.warning("moved %d messages from %s to v2compat on the way out", moved, direct.name)
    return moved


class GoneNodeBindings:
    """Removes the bindings of nodes gone for ``grace`` seconds (see the module docstring).

    Args:
        broker: The broker's Redis, through kombu.
        mailbox_queue: A node's control queue (``app.control.mailbox.get_queue``).
        mailbox_exchange: The control exchange (``celery.pidbox``).
        gone: Which of the given nodes have no live heartbeat.
        grace: Seconds a node must have been gone.
    """

    def __init__(
        self,
        broker: BrokerRedis,
        *,
        mailbox_queue: Callable[[str], Queue],
        mailbox_exchange: str,
        gone: Callable[[list[str]], list[str]],
        grace: float = BINDING_GRACE_SECONDS,
    ) -> None:
        self.broker = broker
        self.mailbox_queue = mailbox_queue
        self.mailbox_exchange = mailbox_exchange
        self.gone = gone
        self.grace = grace
        #: Gone node → when this survivor first saw it gone (monotonic clock).
        self._since: dict[str, float] = {}

    def _nodes(self) -> list[str]:
        """Every node with a binding in either table."""
        nodes = set(self.broker.direct_queues())
        suffix = self.mailbox_queue("").name  # ".celery.pidbox"
        for queue in self.broker.bound_queues(self.mailbox_exchange):
            if queue.endswith(suffix) and len(queue) > len(suffix):
                nodes.add(queue[: -len(suffix)])
        return sorted(nodes)

    def sweep(self) -> list[str]:
        """Remove the bindings of every node gone for ``grace`` seconds; which nodes."""
        now = time.monotonic()
        gone = self.gone(self._nodes())
        self._since = {node: self._since.get(node, now) for node in gone}
        unbound = []
        for node in [node for node in gone if now - self._since[node] >= self.grace]:
            direct = worker_direct(node)
            removed = _unbind(self.broker, [direct, self.mailbox_queue(node)])
            moved = _drain(self.broker, direct.name)
            if not self.gone([node]):  # back under its name meanwhile: put it all back
                for table, member in removed:
                    self.broker.client.sadd(table, member)
                continue
            del self._since[node]
            unbound.append(node)
            log.info("node %s is gone: removed its %d bindings (%d messages moved to v2compat)",
                     node, len(removed), moved)  # fmt: skip
        return unbound
