"""The Celery app: configured from settings, JSON only, one queue per lane.

Task names and queues are the contract (DESIGN.md §3)::

    snakepool.route             on "router"    decides, then forwards (under the caller's id)
    snakepool.v3.execute        on "v3"        stateless lane
    snakepool.v2compat.execute  on "v2compat"  V2 semantics (+ each node's worker-direct queue)

Workers run ``-P threads`` with prefetch 1 and late acks: a message is acknowledged
only once its task has finished, and a lost worker's tasks are redelivered. A message a
node cannot read (not JSON, undecodable) is answered with ``InvalidArguments`` under its
task id (:mod:`~snakepool.tasks.worker.consumer`).

Redis restarts (issue 9 item 6) are ridden out on both sides:

- a node keeps retrying to store a result until Redis answers again (Celery gives up on
  the first connection error by default: the task ran, its result was dropped, and the
  caller waited for ever), and keeps retrying to forward a message for a minute;
- a client gives up publishing after about a second, so ``submit`` says at once that
  nothing was sent (:mod:`snakepool.tasks.client` raises ``PoolUnavailable``);
- everyone waits for results through
  :class:`~snakepool.tasks.worker.results.ResilientRedisBackend`, whose pub/sub consumer
  reconnects by itself and rereads what was stored meanwhile;
- the broker transport (:mod:`snakepool.tasks.worker.broker`) no longer kills a node
  that loses Redis with requests running, and acknowledges them once Redis is back.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any, Protocol

from celery import Celery, Task
from kombu import Queue

from snakepool.config import Settings
from snakepool.config.keys import Keys
from snakepool.errors import InvalidArguments
from snakepool.sessions.connection import EMBEDDED_SCHEME
from snakepool.tasks.worker.broker import transport_for
from snakepool.tasks.worker.broker_url import kombu_url
from snakepool.tasks.worker.pop_defer import SHADOW_PRIORITY
from snakepool.tasks.worker.results import SnakepoolCelery, backend_url
from snakepool.tasks.worker.unreachable import typed_errors

__all__ = [
    "LANE_QUEUES",
    "LANE_TASKS",
    "ROUTER_QUEUE",
    "ROUTE_TASK",
    "SnakepoolTask",
    "create_app",
]

ROUTE_TASK = "snakepool.route"
ROUTER_QUEUE = "router"
#: Lane → the task that runs a request on it (its queue has the lane's name).
LANE_TASKS = {"v3": "snakepool.v3.execute", "v2compat": "snakepool.v2compat.execute"}
LANE_QUEUES = tuple(LANE_TASKS)

#: Seconds results are kept.
RESULT_EXPIRES = 24 * 3600
#: A node's attempts to store a result while Redis is unreachable: with back-off capped
#: at :data:`RESULT_RETRY_MAX_MS`, about ten minutes before it gives up.
RESULT_STORE_RETRIES = 1200
#: Longest pause between two of those attempts, in milliseconds (a result is stored
#: within about a second of Redis coming back).
RESULT_RETRY_MAX_MS = 1000
#: How a client publishes: give up after about a second (``submit`` then raises).
CLIENT_PUBLISH_RETRY = {
    "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
}  # fmt: skip
#: How a node publishes (the router forwarding an accepted request): about a minute.
NODE_PUBLISH_RETRY = {
    "max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 1.0,
}  # fmt: skip


#: Each task class's signature (read once), to check a message's arguments against it.
_SIGNATURES: dict[type, inspect.Signature] = {}


class DeliveryHooks(Protocol):
    """What a worker node does as each of its task messages starts and ends (set as
    ``app.snakepool_delivery_hooks``; the node's recovery service). Never raise."""

    def task_started(self, task: Task) -> None:
        """A thread is about to run ``task`` (its ``request`` holds the delivery)."""

    def task_done(self, task: Task) -> None:
        """``task`` has run, whatever its outcome (its result is stored right after)."""


class SnakepoolTask(Task):  # type: ignore[misc]
    """The base of every snakepool task: Redis or the broker unreachable is a typed
    ``PoolUnavailable`` (``reason="unreachable"``), any other redis or kombu error a
    ``SnakepoolError`` — never a bare redis or kombu error stored as a request's outcome
    (:mod:`~snakepool.tasks.worker.unreachable`).

    The caller's result is then one of ours even when the router could not read the
    flags or a session's binding, or forward the request, during a Redis restart (issue 9
    item 6). A subclass changes :meth:`_run_call`, never ``__call__``, so the mapping
    stays around whatever it runs.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in vars(cls):  # how DeliveredOnce once lost the mapping
            raise TypeError(
                f"{cls.__name__} overrides __call__: override _run_call instead, so what "
                "the task raises stays typed"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The node's in-flight record (tasks/worker/recovery/step.py): called here rather
        # than through Celery's task_prerun / task_postrun signals, whose dispatch cost
        # ~2.5 % of a lane node's GIL time per request. Never raise.
        hooks: DeliveryHooks | None = getattr(self.app, "snakepool_delivery_hooks", None)
        if hooks is not None:
            hooks.task_started(self)
        try:
            with typed_errors(f"task {self.name}"):
                try:
                    return self._run_call(*args, **kwargs)
                except TypeError:
                    # Only now: Python's own call has already checked the arguments, so
                    # the signature is read again only to tell the sender's mistake apart.
                    self._check_call(args, kwargs)
                    raise
        finally:
            if hooks is not None:
                hooks.task_done(self)

    def _check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse a message whose arguments do not fit the task's signature (after a
        ``TypeError``: one that fits lets the command's own ``TypeError`` through).

        A message sent around the client (``send_task`` with no ``command``, a fourth
        positional argument, ``command`` given twice) would otherwise fail with a raw
        ``TypeError`` from Python's call; it is the sender's mistake, so it is
        ``InvalidArguments``, like any other bad value a message carries.

        Raises:
            InvalidArguments: naming the task and what did not fit.
        """
        signature = _SIGNATURES.get(type(self))
        if signature is None:
            plain = inspect.signature(self.run)  # shown without annotations in errors
            signature = _SIGNATURES[type(self)] = plain.replace(
                parameters=[p.replace(annotation=p.empty) for p in plain.parameters.values()],
                return_annotation=plain.empty,
            )
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(
                f"task {self.name}: the message's arguments do not fit {signature}: {exc}"[:500]
            ) from None

    def _run_call(self, *args: Any, **kwargs: Any) -> Any:
        """What one call of the task runs (Celery's own call: request pushed, ``run``)."""
        return super().__call__(*args, **kwargs)


def _backend(settings: Settings) -> str:
    if settings.redis_url.startswith(EMBEDDED_SCHEME):
        return "cache+memory://"
    return backend_url(settings.redis_url)


def create_app(settings: Settings, *, name: str = "snakepool", node: bool = False) -> Celery:
    """A Celery app for ``settings`` (broker ``BROKER_URL``, results in ``REDIS_URL``).

    With ``REDIS_URL=fakeredis://…`` (the embedded demo) the broker is kombu's in-memory
    transport and results stay in process memory.

    Args:
        node: For a worker node (store results and forward messages through a Redis
            restart; a new incarnation, ``app.snakepool_incarnation``, whose processing
            list the reliable pop moves messages through: ``tasks/worker/pop.py``);
            False for a client (refuse quickly what cannot be sent).
    """
    broker = kombu_url(settings.broker_url or settings.redis_url)
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    # One run of a node (recovery names its in-flight record and processing list so).
    incarnation = uuid.uuid4().hex if node else None
    if transport_for(broker):
        # Two lists per queue: live messages, and shadow copies (priority 9), which
        # nodes take only while live traffic leaves room (tasks/worker/pop_defer.py).
        # The reliable pop blocks on each list with a connection of its own (pop.py).
        transport_options["priority_steps"] = [0, SHADOW_PRIORITY]
        if incarnation is not None:
            keys = Keys(settings.key_prefix)
            transport_options["processing_list"] = keys.processing(incarnation)
            transport_options["inflight_record"] = keys.inflight(incarnation)
    if broker.startswith(EMBEDDED_SCHEME):
        broker = "memory://localhost/"
        transport_options["polling_interval"] = 0.005  # in-process: polling is nearly free
    app = SnakepoolCelery(
        name, broker=broker, backend=_backend(settings), set_as_current=False,
        task_cls=SnakepoolTask,
    )  # fmt: skip
    if transport := transport_for(broker):
        app.conf.broker_transport = transport  # survives a Redis restart (broker.py)
    routes: dict[str, Any] = {ROUTE_TASK: {"queue": ROUTER_QUEUE}}
    routes.update({task: {"queue": lane} for lane, task in LANE_TASKS.items()})
    app.conf.update(
        # Never pickle: JSON in both directions.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(ROUTER_QUEUE), *(Queue(lane) for lane in LANE_QUEUES)],
        task_default_queue=ROUTER_QUEUE,
        task_routes=routes,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # AsyncResult.queue names the lane that ran the request.
        result_extended=True,
        result_expires=RESULT_EXPIRES,
        # Events for Flower and `celery events`.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # <node>.dq2 queues: V2-compat session affinity to one node.
        worker_direct=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A message a node cannot read gets a stored InvalidArguments, not silence.
        worker_consumer="snakepool.tasks.worker.consumer:Consumer",
        task_publish_retry=True,
        task_publish_retry_policy=NODE_PUBLISH_RETRY if node else CLIENT_PUBLISH_RETRY,
    )
    if node:
        app.conf.update(
            result_backend_always_retry=True,
            result_backend_max_retries=RESULT_STORE_RETRIES,
            result_backend_max_sleep_between_retries_ms=RESULT_RETRY_MAX_MS,
        )
    app.snakepool_settings = settings
    app.snakepool_incarnation = incarnation
    return app
