"""Forwarding: the router's hop, publishing the lane message under the caller's task id.

::

    caller ── snakepool.route (task id T) ──► router node: decide, then forward()
                                                 │ publishes snakepool.<lane>.execute, task id T
                                                 ▼ returns None (nothing stored: ignore_result)
                                   lane node runs T and stores T's result ──► caller's AsyncResult

The router once handed over with ``Task.replace``, which ends the router task by raising
``celery.exceptions.Ignore``. That cost more than the rest of the hop: Celery's tracer
builds an ``ExceptionInfo`` with a formatted traceback for it (~0.8 ms of CPU, against
~0.07 ms for a task that returns), the exception's frames left cyclic garbage behind (a
~60 ms full collection every ~240 routed requests), and Flower counted the router's
tasks as neither succeeded nor failed. :func:`forward` publishes what ``Task.replace``
would have published — the same task id, the caller's callbacks, errbacks, chain, chord
and group — and the router task then simply returns: it succeeds (Flower counts it) and,
its task being ``ignore_result``, never stores a result over the lane's.

The ``task-sent`` event of the lane message (Flower learns the lane's queue from it) goes
out with the node's other task events: Celery publishes a sent event at once, one
``PUBLISH`` through a producer of its own (~9 % of a router node's time); a worker's
dispatcher buffers task events and sends them, one ``task.multi`` message per event
loop tick (:class:`SentEvents`).
"""

from __future__ import annotations

from typing import Any

from celery import Signature

__all__ = ["SentEvents", "forward"]


class SentEvents:
    """What Celery's ``send_task`` takes as ``event_dispatcher``: its ``task-sent`` event,
    handed to the worker consumer's event dispatcher, which buffers task events — or,
    where that dispatcher would not send it as Celery does, published as Celery does.

    The dispatcher is looked up as the event is sent, after the message went out: a
    consumer that restarted meanwhile (a lost broker connection; ``send_task`` retries
    across it) has disabled the one it had, and a new one is in its place.

    Args:
        consumer: The worker's consumer (its ``event_dispatcher`` changes on a restart).
        fallback: A dispatcher publishing with the producer it is given (Celery's own
            default: ``app.events.Dispatcher(enabled=False)``).
    """

    def __init__(self, consumer: Any, fallback: Any) -> None:
        self.consumer = consumer
        self.fallback = fallback

    def buffering(self) -> Any:
        """The consumer's dispatcher if it buffers task events now, else None: none yet,
        disabled (closed, or the node runs without events), task events turned off
        (``celery control disable_events``: Celery's own sent event does not heed that)
        or not buffered (no event loop)."""
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        if dispatcher is None or not dispatcher.enabled or "task" not in dispatcher.buffer_group:
            return None
        if dispatcher.groups and "task" not in dispatcher.groups:
            return None
        return dispatcher

    def publish(
        self, event_type: str, fields: dict[str, Any], producer: Any, **options: Any
    ) -> None:
        """Celery's ``EventDispatcher.publish`` call (``producer``: the message's; the
        retry ``options``), buffered when the consumer's dispatcher buffers."""
        dispatcher = self.buffering()
        if dispatcher is None:
            self.fallback.publish(event_type, fields, producer, **options)
        else:
            dispatcher.send(event_type, **fields)


def forward(task: Any, signature: Signature) -> None:
    """Publish ``signature`` in place of the running ``task``, under its task id.

    Carries the options ``Task.replace`` carries (callbacks as ``link``, errbacks as
    ``link_error``, ``chain``, ``chord``, ``group_id``, ``group_index``, ``root_id`` and
    ``replaced_task_nesting`` + 1), so a router task that was part of a canvas hands its
    place in it to the lane task. The message's own options (queue, shadow header) come
    from ``signature``.

    Args:
        task: The bound Celery task being run (its ``request`` says what to carry).
        signature: The lane task's signature (from
            :func:`~snakepool.tasks.worker.dispatch.lane_signature`).

    Raises:
        kombu.exceptions.OperationalError: the broker refused the message (the router
            task then fails with it: nothing was forwarded).
    """
    request = task.request
    carried: dict[str, Any] = {
        "link": request.callbacks,
        "link_error": request.errbacks,
        "chain": request.chain,
        "chord": request.chord,
        "group_id": request.group,
        "group_index": request.group_index,
        "root_id": request.root_id,
    }
    options = {name: value for name, value in carried.items() if value is not None}
    events = getattr(task.app, "snakepool_sent_events", None)
    if events is not None:
        options["event_dispatcher"] = events
    nesting = request.get("replaced_task_nesting") or 0
    # send_task rather than Signature.apply_async: the router knows the message is
    # complete, and the lane task's apply_async would only re-check and re-route it.
    task.app.send_task(
        signature.task,
        args=signature.args,
        kwargs=signature.kwargs,
        task_id=request.id,
        replaced_task_nesting=nesting + 1,
        **signature.options,
        **options,
    )
