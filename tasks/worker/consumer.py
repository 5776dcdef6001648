"""The node's message consumer: a message it cannot read is answered, not lost.

Celery's consumer drops a task message whose body it cannot decode or may not accept,
storing nothing, so the caller's ``AsyncResult.get()`` never returns — a lost request
(DESIGN.md §8)::

    message body                         Celery's consumer            here
    ───────────────────────────────────  ───────────────────────────  ────────────────────
    JSON that does not parse (an         on_decode_error: logged,     InvalidArguments
    integer of more than 4300 digits,    acked                        stored under the
    nesting past the recursion limit,                                 task id, acked
    bytes that are not UTF-8)
    not JSON (pickle, msgpack, yaml:     on_invalid_task: logged,     the same
    ContentDisallowed), an invalid       rejected
    task message (InvalidTaskError)
    no task name                         on_unknown_message: logged,  the same
                                         rejected
    JSON of the wrong shape (not         the node dies ("Unrecover-   the same (checked
    [args, kwargs, embed]), a task       able error"), the message    before Celery's
    name that is not a string, no id     is restored: it kills the    request is built)
                                         next node too

The task id comes from the message's headers (Celery's protocol 2, what every client
sends) and is believed only when it is a full match of
:data:`~snakepool.config.ids.REQUEST_ID`: it becomes part of a Redis key. A task id that
already has a final result keeps it (one task id, one stored result), and a message sent
with ``ignore_result`` (a shadow copy) gets none. A message with no usable id is logged
and dropped, as Celery does. Installed by :func:`~snakepool.tasks.worker.app.create_app`
as the ``worker_consumer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import states
from celery.app.task import Context
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed, DecodeError

from snakepool.config.ids import REQUEST_ID, is_valid
from snakepool.config.json_values import MAX_INT_DIGITS
from snakepool.errors import InvalidArguments
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from snakepool.tasks.worker.forward import SentEvents

__all__ = ["Consumer", "malformed", "unreadable_reason"]

log = logging.getLogger("snakepool.node")

#: Task name → the queue the caller's ``AsyncResult.queue`` names (the lane, even for a
#: V2-compat session's worker-direct delivery).
_QUEUE_OF = {ROUTE_TASK: ROUTER_QUEUE, **{task: lane for lane, task in LANE_TASKS.items()}}


def unreadable_reason(exc: BaseException) -> str:
    """Why a message could not be read, in words its sender can act on."""
    cause = exc.__context__ if isinstance(exc, DecodeError) and exc.__context__ else exc
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return (
            f"an integer in it has more than {MAX_INT_DIGITS} digits (integers are exact up "
            f"to {MAX_INT_DIGITS} digits, Python's int/str conversion limit, which JSON "
            "parsing enforces)"
        )
    if isinstance(cause, RecursionError):
        return "it is nested too deeply to parse"
    if isinstance(exc, ContentDisallowed):
        return f"{exc} (snakepool accepts JSON messages only)"
    if isinstance(exc, InvalidTaskError):
        return f"{exc}"[:300]
    return f"{type(cause).__name__}: {cause}"[:300]


def malformed(message: Any) -> str | None:
    """What is wrong with a task message's shape that would crash Celery's consumer.

    Celery builds its request from a protocol-2 message assuming a string task name and
    a body of ``[args, kwargs, embed]``; anything else raises out of its consumer and
    stops the node. Only those shapes are looked at here: a message Celery handles
    itself (no headers, no task name, a body that does not decode) is left to it.

    Returns:
        None when Celery can take the message (or handles what is wrong with it).
    """
    headers = getattr(message, "headers", None)
    if not isinstance(headers, dict) or "task" not in headers:
        return None
    if not isinstance(headers["task"], str):
        return "its task name is not a string"
    if not isinstance(headers.get("id"), str):
        return "it has no task id"
    try:
        body = message.payload  # decoded once: Celery reuses it
    except Exception:
        return None  # undecodable: Celery's hooks (above) answer it
    hybrid = isinstance(body, dict) and "args" in body  # protocol 1, converted by Celery
    if hybrid or (
        isinstance(body, list | tuple)
        and len(body) == 3
        and isinstance(body[0], list | tuple)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict)
    ):
        return None
    return "its body is not [args, kwargs, embed] (a list, an object, an object)"


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, storing ``InvalidArguments`` for a message it cannot read.

    Gives its app ``app.snakepool_sent_events``: the router's forward sends its
    ``task-sent`` event through the consumer's event dispatcher (:class:`SentEvents`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app.snakepool_sent_events = SentEvents(self, self.app.events.Dispatcher(enabled=False))

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler, behind a check of the shapes that would crash it."""
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = malformed(message)
            if problem is not None:
                return self.on_invalid_task(None, message, InvalidTaskError(problem))
            return handle(message)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """The body did not decode (see the module docstring)."""
        if not self._answer(message, exc):
            super().on_decode_error(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Content not accepted (``ContentDisallowed``) or an invalid task message."""
        if not self._answer(message, exc):
            super().on_invalid_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """A message that names no task."""
        if not self._answer(message, None):
            super().on_unknown_message(body, message)

    def _answer(self, message: Any, exc: BaseException | None) -> bool:
        """Store the failure under the message's task id and ack it; False when the
        message has no usable id (or the failure could not be stored): then Celery's
        handling (log, drop) follows."""
        headers = getattr(message, "headers", None)
        task_id = headers.get("id") if isinstance(headers, dict) else None
        if not is_valid(REQUEST_ID, task_id):
            return False
        assert isinstance(headers, dict) and isinstance(task_id, str)
        task = headers.get("task")
        task = task if isinstance(task, str) else None
        reason = "it names no task" if exc is None else unreadable_reason(exc)
        error = InvalidArguments(
            f"the request's message could not be read: {reason}", task_id=task_id
        )
        try:
            if not headers.get("ignore_result"):
                self._store(message, task_id, task, error)
        except Exception:
            log.exception("cannot store the failure of unreadable message %s", task_id)
            return False
        log.warning("task %s (%.80r): %s; its caller gets InvalidArguments", task_id, task, reason)
        if self.event_dispatcher:
            self.event_dispatcher.send(
                "task-failed", uuid=task_id, exception=f"InvalidArguments({error.message!r})"
            )
        message.ack_log_error(log, self.connection_errors)
        return True

    def _store(self, message: Any, task_id: str, task: str | None, error: Exception) -> None:
        """Store ``error`` as the result of ``task_id``, unless it already has one."""
        backend = self.app.backend
        if backend.get_task_meta(task_id).get("status") in states.READY_STATES:
            log.info("%s already has a result: the unreadable message is dropped", task_id)
            return
        info = getattr(message, "delivery_info", None) or {}
        request = Context(
            id=task_id, task=task, args=None, kwargs=None, hostname=self.hostname,
            delivery_info={"routing_key": _QUEUE_OF.get(task or "", info.get("routing_key"))},
            chord=None, errbacks=None, chain=None,
        )  # fmt: skip
        backend.store_result(task_id, error, states.FAILURE, request=request)
