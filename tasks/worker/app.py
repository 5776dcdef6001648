"""The Celery app: configured from settings, JSON only, one queue per lane.

Task names and queues are the contract (DESIGN.md §3)::

    snakepool.route             on "router"    decides, then forwards (under the caller's id)
    snakepool.v3.execute        on "v3"        stateless lane
    snakepool.v2compat.execute  on "v2compat"  V2 semantics (+ each node's worker-direct queue)

Workers run ``-P threads`` with prefetch 1 and late acks: a message is acknowledged
only once its task has finished, and a lost worker's tasks are redelivered. A message a
node cannot read (not JSON, undecodable) is answered with ``InvalidArguments`` under its
task id (:mod:`~snakepool.tasks.worker.consumer`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from snakepool.config import Settings
from snakepool.sessions.connection import EMBEDDED_SCHEME

__all__ = [
    "LANE_QUEUES",
    "LANE_TASKS",
    "ROUTER_QUEUE",
    "ROUTE_TASK",
    "create_app",
]

ROUTE_TASK = "snakepool.route"
ROUTER_QUEUE = "router"
#: Lane → the task that runs a request on it (its queue has the lane's name).
LANE_TASKS = {"v3": "snakepool.v3.execute", "v2compat": "snakepool.v2compat.execute"}
LANE_QUEUES = tuple(LANE_TASKS)

#: Seconds results are kept.
RESULT_EXPIRES = 24 * 3600


def _backend(settings: Settings) -> str:
    if settings.redis_url.startswith(EMBEDDED_SCHEME):
        return "cache+memory://"
    return settings.redis_url


def create_app(settings: Settings, *, name: str = "snakepool") -> Celery:
    """A Celery app for ``settings`` (broker ``BROKER_URL``, results in ``REDIS_URL``).

    With ``REDIS_URL=fakeredis://…`` (the embedded demo) the broker is kombu's in-memory
    transport and results stay in process memory.
    """
    broker = settings.broker_url or settings.redis_url
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if broker.startswith(EMBEDDED_SCHEME):
        broker = "memory://localhost/"
        transport_options["polling_interval"] = 0.005  # in-process: polling is nearly free
    app = Celery(name, broker=broker, backend=_backend(settings), set_as_current=False)
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
    )
    app.snakepool_settings = settings
    return app
