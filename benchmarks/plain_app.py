"""The baseline of benchmark (i): a plain Celery app with one task that returns a small dict.

Its worker is started as users start any Celery worker::

    SNAKEPOOL_BENCH_PLAIN_URL=redis://127.0.0.1:PORT/0 python -m celery -A benchmarks.plain_app \\
        worker -P threads -c 4 -Q plain --without-mingle --without-gossip

and the benchmark sends ``bench.plain.ping`` with ``.delay()`` from its own copy of the
app (:func:`create_plain_app`). The Celery settings are *copied* from snakepool's own app
(:func:`snakepool.tasks.worker.app.create_app`) — JSON only, late acks, prefetch 1,
extended results, task events — so that the comparison with a lane task shows what
snakepool adds, not a difference in how Celery was configured.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery
from kombu import Queue

__all__ = ["PLAIN_QUEUE", "PLAIN_TASK", "SHARED_SETTINGS", "URL_ENV", "create_plain_app"]

PLAIN_QUEUE = "plain"
PLAIN_TASK = "bench.plain.ping"
#: The broker (and result backend) URL of the worker started by the benchmark.
URL_ENV = "SNAKEPOOL_BENCH_PLAIN_URL"
#: Celery settings taken from snakepool's app as they are (everything but its queues,
#: routes and worker-direct queues, which are about lanes).
SHARED_SETTINGS = (
    "task_serializer", "result_serializer", "accept_content", "result_accept_content",
    "task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier",
    "result_extended", "result_expires", "worker_send_task_events", "task_send_sent_event",
    "broker_transport_options", "broker_connection_retry_on_startup",
    "worker_hijack_root_logger",
)  # fmt: skip


def create_plain_app(url: str) -> Celery:
    """A Celery app on ``url`` (broker and results) with the one task, on queue ``plain``."""
    from snakepool.config import load_settings
    from snakepool.tasks.worker.app import create_app

    reference = create_app(load_settings(redis_url=url, broker_url=url))
    shared = {key: reference.conf[key] for key in SHARED_SETTINGS}
    reference.close()
    app = Celery("plain", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        shared,
        task_queues=[Queue(PLAIN_QUEUE)],
        task_default_queue=PLAIN_QUEUE,
        task_routes={PLAIN_TASK: {"queue": PLAIN_QUEUE}},
    )

    @app.task(name=PLAIN_TASK)  # type: ignore[untyped-decorator]
    def ping() -> dict[str, Any]:
        """What snakepool's ``ping`` answers, without snakepool."""
        return {"pong": True, "pid": os.getpid()}

    return app


@functools.cache
def _worker_app() -> Celery:
    return create_plain_app(os.environ[URL_ENV])


def __getattr__(name: str) -> Any:
    """``celery -A benchmarks.plain_app`` looks up ``app``: built on first access, from
    ``SNAKEPOOL_BENCH_PLAIN_URL``, so that importing this module connects nowhere."""
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
