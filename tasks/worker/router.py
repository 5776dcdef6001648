"""The router task ``snakepool.route``: decide the lane, then become the lane's task.

It forwards with ``Task.replace``, so the caller's AsyncResult resolves to the lane's
result and ``AsyncResult.queue`` names the lane. The decision is
:func:`snakepool.tasks.rollout.routing.decide` on the flags as of at most 0.5 s ago; the
zero-hop client makes the same decision in-process with the same code and
:func:`destination`.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Signature, shared_task
from celery.utils.nodenames import worker_direct
from kombu import Queue

from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import Keys, validate_session_id
from snakepool.sessions import SessionStore
from snakepool.tasks.rollout.breaker import CircuitBreaker
from snakepool.tasks.rollout.routing import decide
from snakepool.tasks.rollout.shadow import should_shadow
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK
from snakepool.tasks.worker.node import current_node, node_alive

__all__ = ["choose", "destination", "lane_signature", "route", "send_shadow"]


def destination(
    lane: str, session_id: str | None, *, store: SessionStore, client: redis.Redis, keys: Keys
) -> str | Queue:
    """The queue for a request on ``lane``.

    A V2-compat session bound to a live node goes to that node's worker-direct queue;
    everything else to the lane's shared queue (a V2-compat session whose node is gone is
    rebound by whichever node takes it there).
    """
    if lane == "v2compat" and session_id is not None:
        node = store.binding(session_id)
        if node and node_alive(client, keys, node):
            direct: Queue = worker_direct(node)
            return direct
    return lane


def lane_signature(  # noqa: PLR0917 - mirrors the task signature plus its queue
    app: Celery,
    lane: str,
    command: str,
    args: dict[str, Any] | None,
    session_id: str | None,
    options: dict[str, Any],
    queue: str | Queue,
) -> Signature:
    """The lane task's signature for one request, bound to ``queue``."""
    return app.signature(
        LANE_TASKS[lane], args=(command, args, session_id), kwargs=options, queue=queue
    )


def send_shadow(  # noqa: PLR0917 - mirrors the task signature plus the request id
    app: Celery,
    lane: str,
    command: str,
    args: dict[str, Any] | None,
    session_id: str | None,
    options: dict[str, Any],
    request_id: str,
) -> dict[str, Any]:
    """Send a fire-and-forget copy to the other lane; return the primary's options."""
    other = "v2compat" if lane == "v3" else "v3"
    copy = {**options, "shadow_id": request_id, "shadow_role": "shadow"}
    lane_signature(app, other, command, args, session_id, copy, other).apply_async(
        ignore_result=True
    )
    return {**options, "shadow_id": request_id, "shadow_role": "primary"}


def choose(
    command: str,
    args: dict[str, Any] | None,
    session_id: str | None,
    flags: RolloutFlags,
    request_id: str,
    *,
    breaker: CircuitBreaker | None = None,
) -> str:
    """The lane (validating the session id first).

    A lane whose circuit breaker is open sheds its traffic to the other lane — except
    under a forced lane: the kill switch is never second-guessed.
    """
    if session_id is not None:
        validate_session_id(session_id)
    lane = decide(command, args, session_id, flags, request_id=request_id)
    if breaker is not None and not flags.forced_lane:
        lane = breaker.route(lane)
    return lane


@shared_task(name=ROUTE_TASK, bind=True)
def route(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Pick the lane for this request and hand it over (the result is the lane's)."""
    node = current_node()
    flags = node.flags.get()
    lane = choose(command, args, session_id, flags, self.request.id, breaker=node.breaker)
    if should_shadow(flags, command, node.catalog):
        options = send_shadow(self.app, lane, command, args, session_id, options, self.request.id)
    queue = destination(lane, session_id, store=node.store, client=node.redis, keys=node.keys)
    raise self.replace(lane_signature(self.app, lane, command, args, session_id, options, queue))
