"""What finalizing the migration needs to know about V2-compat: its backlog and programs.

Gathers a :class:`~snakepool.tasks.rollout.finalize.Readiness`:

- **queued**: messages on the ``v2compat`` queue plus every worker-direct queue
  (``<node>.dq2``: only V2-compat session affinity uses them), dead nodes' included;
- **in flight**: messages kombu holds as delivered-not-acknowledged (late acks: a
  request is acknowledged once it finished) whose task is the V2-compat lane's;
- **programs**: for the sessions bound to live V2-compat nodes, the programs their
  interpreters hold that are not in the store (:mod:`~snakepool.tasks.worker.inventory`)
  — asked only when nothing is queued or in flight, so the interpreters are idle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import redis
from celery import Celery

from snakepool.config.ids import SESSION_ID, is_valid
from snakepool.config.keys import Keys
from snakepool.sessions import SessionStore
from snakepool.tasks.rollout.finalize import Readiness
from snakepool.tasks.worker.app import LANE_TASKS
from snakepool.tasks.worker.inventory import unstored_programs
from snakepool.tasks.worker.node import live_nodes

__all__ = ["V2_QUEUE", "bound_sessions", "gather_readiness", "v2compat_backlog"]

#: The V2-compat lane's shared queue.
V2_QUEUE = "v2compat"
#: kombu's Redis transport: the hash of delivered, unacknowledged messages.
UNACKED_KEY = "unacked"
#: Sessions read from the index per round trip.
_BATCH = 500


def v2compat_backlog(broker: redis.Redis) -> tuple[int, int]:
    """(queued, in flight) on V2-compat, from the broker's own keys."""
    queued = int(broker.llen(V2_QUEUE))
    for key in broker.scan_iter(match="*.dq2", count=500, _type="list"):
        queued += int(broker.llen(key))
    in_flight = 0
    for raw in broker.hvals(UNACKED_KEY):
        if _task_of(raw) == LANE_TASKS["v2compat"]:
            in_flight += 1
    return queued, in_flight


def _task_of(raw: Any) -> str | None:
    # kombu stores [message, exchange, routing key]; the task name is a message header.
    try:
        message = json.loads(raw)[0]
        return str(message["headers"]["task"])
    except (ValueError, LookupError, TypeError):
        return None


def _session_ids(client: redis.Redis, keys: Keys) -> Iterator[str]:
    for member, _ in client.zscan_iter(keys.session_index, count=_BATCH):
        yield member.decode() if isinstance(member, bytes) else str(member)


def bound_sessions(client: redis.Redis, keys: Keys, nodes: set[str]) -> dict[str, list[str]]:
    """Node → the live sessions bound to it, for the nodes in ``nodes``."""
    bound: dict[str, list[str]] = {}
    batch: list[str] = []

    def flush() -> None:
        with client.pipeline(transaction=False) as pipe:
            for session_id in batch:
                pipe.hget(keys.session(session_id), "v2_node")
            for session_id, node in zip(batch, pipe.execute(), strict=True):
                name = node.decode() if isinstance(node, bytes) else node
                if name in nodes:
                    bound.setdefault(name, []).append(session_id)
        batch.clear()

    for session_id in _session_ids(client, keys):
        if not is_valid(SESSION_ID, session_id):
            continue  # an id an older version indexed may be malformed
        batch.append(session_id)
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    return bound


def gather_readiness(
    app: Celery,
    client: redis.Redis,
    broker: redis.Redis,
    store: SessionStore,
    *,
    timeout: float = 30.0,
) -> Readiness:
    """Everything :func:`~snakepool.tasks.rollout.finalize.blockers` needs beyond flags.

    Args:
        timeout: Seconds each V2-compat node has to report its programs.
    """
    queued, in_flight = v2compat_backlog(broker)
    if queued or in_flight:
        return Readiness(queued=queued, in_flight=in_flight)
    v2_nodes = {n["name"] for n in live_nodes(client, store.keys) if "v2compat" in n["lanes"]}
    bindings = bound_sessions(client, store.keys, v2_nodes)
    missing, silent = unstored_programs(app, store, bindings, timeout=timeout)
    return Readiness(unstored=missing, silent_nodes=silent)
