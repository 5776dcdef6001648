"""The router task ``snakepool.route``: decide the lane, then forward the request to it.

It publishes the lane's message itself, under the caller's task id
(:func:`~snakepool.tasks.worker.forward.forward`), and returns: the caller's AsyncResult
resolves to the lane's result and ``AsyncResult.queue`` names the lane, while the router
task succeeds (Flower counts it) without storing a result of its own
(``ignore_result``; an error it raises *is* stored: then nothing was forwarded and that
error is the request's outcome). The decision is
:func:`snakepool.tasks.rollout.routing.decide` on the flags as of at most 0.5 s ago; the
zero-hop client makes the same decision in-process with the same code
(:mod:`snakepool.tasks.worker.dispatch`).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from snakepool.tasks.worker.app import ROUTE_TASK
from snakepool.tasks.worker.dispatch import (
    choose,
    destination,
    lane_signature,
    plan_shadow,
    send_shadow,
)
from snakepool.tasks.worker.forward import forward
from snakepool.tasks.worker.logs import CLIENT_ERRORS
from snakepool.tasks.worker.node import current_node
from snakepool.tasks.worker.options import LaneOptions
from snakepool.tasks.worker.recovery.once import DeliveredOnce

__all__ = ["route"]


@shared_task(
    name=ROUTE_TASK,
    bind=True,
    base=DeliveredOnce,
    throws=CLIENT_ERRORS,
    ignore_result=True,
    store_errors_even_if_ignored=True,
)
def route(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> None:  # fmt: skip
    """Pick the lane for this request and forward it there (the result is the lane's).

    Raises:
        InvalidArguments: an unknown option, a bad ``timeout`` or session id (stored as
            the request's result: nothing is forwarded).
    """
    node = current_node()
    checked = LaneOptions.parse(options).to_kwargs()
    flags = node.flags.get()
    lane = choose(command, args, session_id, flags, self.request.id, breaker=node.breaker)
    tag = plan_shadow(command, self.request.id, flags=flags, catalog=node.catalog)
    queue = destination(lane, session_id, store=node.store, client=node.redis, keys=node.keys)
    signature = lane_signature(
        self.app, lane, command, args, session_id, checked, queue, shadow=tag
    )
    forward(self, signature)
    if tag is not None:
        send_shadow(self.app, lane, command, args, session_id, checked, self.request.id)
