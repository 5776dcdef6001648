"""Sending a request to its lane: shared by the router task and the zero-hop client.

The same code on both paths, so a request goes to the same queue, with the same shadow
copy, whichever way it was sent: :func:`choose` the lane (``decide`` + circuit breaker),
:func:`plan_shadow` (is this one shadowed?), send :func:`lane_signature` to the
:func:`destination` queue, then, if shadowed, :func:`send_shadow` the copy to the other
lane — after the primary, so the copy's publish never delays it. Only here is a shadow
tag ever put on a message.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, Signature
from celery.utils.nodenames import worker_direct
from kombu import Queue

from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import Keys
from snakepool.sessions import SessionStore
from snakepool.tasks.rollout import shadow as shadow_records
from snakepool.tasks.rollout.breaker import CircuitBreaker
from snakepool.tasks.rollout.routing import decide, is_pinned
from snakepool.tasks.rollout.shadow import CommandCatalog, is_pair_id, should_shadow
from snakepool.tasks.worker.app import LANE_TASKS
from snakepool.tasks.worker.node import node_alive
from snakepool.tasks.worker.options import ShadowTag, checked_session_id, shadow_task_id
from snakepool.tasks.worker.pop_defer import SHADOW_PRIORITY

__all__ = ["choose", "destination", "lane_signature", "plan_shadow", "send_shadow"]

log = logging.getLogger("snakepool.router")


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
    *,
    shadow: ShadowTag | None = None,
) -> Signature:
    """The lane task's signature for one request, bound to ``queue``.

    Args:
        options: The caller's options, already checked (``LaneOptions.to_kwargs()``).
        shadow: The shadow tag to carry in the message headers, if any.
    """
    extra: dict[str, Any] = {"headers": shadow.headers()} if shadow is not None else {}
    return app.signature(
        LANE_TASKS[lane], args=(command, args, session_id), kwargs=options, queue=queue, **extra
    )


def send_shadow(  # noqa: PLR0917 - mirrors the task signature plus the request id
    app: Celery,
    lane: str,
    command: str,
    args: dict[str, Any] | None,
    session_id: str | None,
    options: dict[str, Any],
    request_id: str,
) -> None:
    """Send the fire-and-forget copy of request ``request_id`` to the lane other than ``lane``.

    Never raises: shadowing is observation. A copy that could not be sent is logged; the
    primary's lone outcome record then expires unpaired (``PAIR_TTL``).

    A copy goes without Celery's ``task-sent`` event (:class:`_Unannounced`): that second
    ``PUBLISH`` was about 40 % of the copy's cost to its sender (~250 µs of CPU at the
    caller, on the primary's way), and Flower would list as sent a copy that may never
    run (deferred, then trimmed or expired). Flower sees a copy once a node takes it.
    """
    other = "v2compat" if lane == "v3" else "v3"
    copy = ShadowTag("shadow", request_id)
    try:
        lane_signature(
            app, other, command, args, session_id, options, other, shadow=copy
        ).apply_async(
            ignore_result=True, task_id=shadow_task_id(request_id),
            event_dispatcher=_UNANNOUNCED, **_deferred(session_id),
        )  # fmt: skip
    except Exception:
        log.exception("sending a shadow copy of %.80r failed; the primary stands", command)


class _Unannounced:
    """Celery's ``send_task`` option ``event_dispatcher`` for a message sent without its
    ``task-sent`` event (Celery has no per-message switch: ``task_send_sent_event`` is
    the app's)."""

    def publish(self, *args: Any, **kwargs: Any) -> None:
        """Celery's sent event: not sent."""


_UNANNOUNCED = _Unannounced()


def _deferred(session_id: str | None) -> dict[str, Any]:
    """The copy's publish options: the priority of the copies nodes defer until live
    traffic leaves room (``pop_defer.py``) — unless it reads a session. A session's copy
    deferred past the session's next write would see that write and report a false
    mismatch, so it goes at live priority and runs beside its primary, as it always did.

    A deferred copy expires with its primary's pair record (``PAIR_TTL``): older, it
    could no longer be compared, and taken newest first it is the last to run; a node
    discards it unrun (Celery's ``expires``) and counts it (``expired``, recovery/step.py)
    instead of running it for nothing on a lane that was too busy to run it in time."""
    if session_id is not None:
        return {}
    return {"priority": SHADOW_PRIORITY, "expires": shadow_records.PAIR_TTL}


def plan_shadow(
    command: str, request_id: str, *, flags: RolloutFlags, catalog: CommandCatalog
) -> ShadowTag | None:
    """The primary's tag if the flags sample this request for shadowing, else None.

    Send the primary first (tagged), then :func:`send_shadow`: the copy's publish never
    delays the primary. Never raises: when deciding fails (Redis, an id that is not
    ours) the failure is logged and the primary goes out untagged, unchanged.
    """
    try:
        if not is_pair_id(request_id) or not should_shadow(flags, command, catalog):
            return None
        return ShadowTag("primary", request_id)
    except Exception:
        log.exception(
            "deciding on a shadow copy of %.80r failed; the request goes unshadowed", command
        )
        return None


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
    when an operator pinned the lane (finalized, forced, excluded command: ``is_pinned``).
    """
    if session_id is not None:
        checked_session_id(session_id)
    lane = decide(command, args, session_id, flags, request_id=request_id)
    if breaker is not None and not is_pinned(flags, command):
        lane = breaker.route(lane)
    return lane
