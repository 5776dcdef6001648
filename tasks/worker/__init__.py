"""The Celery side: what a worker node runs, and how a request reaches it.

- :mod:`~snakepool.tasks.worker.app` — the Celery app, task names and queues (the contract);
  :mod:`~snakepool.tasks.worker.celery_app` — that app built from the settings, for
  ``celery -A snakepool.tasks.worker.celery_app …``;
- :mod:`~snakepool.tasks.worker.bootstep` and :mod:`~snakepool.tasks.worker.node` — one
  :class:`Node` per worker process: its pool, store, flags, metrics and heartbeat;
- :mod:`~snakepool.tasks.worker.router` — the ``snakepool.route`` task, which hands a
  request to its lane with :mod:`~snakepool.tasks.worker.forward`;
  :mod:`~snakepool.tasks.worker.dispatch` — choosing the lane and queue, shadow copies
  (shared with the zero-hop client);
- :mod:`~snakepool.tasks.worker.lanes` — the ``snakepool.v3.execute`` and
  ``snakepool.v2compat.execute`` tasks, around the lane pipeline
  (:mod:`~snakepool.tasks.worker.pipeline`);
- :mod:`~snakepool.tasks.worker.options` — caller options and the internal shadow tag;
- :mod:`~snakepool.tasks.worker.observer` — :class:`LaneObserver`, told about every
  finished request (a node's Prometheus metrics, :mod:`snakepool.tasks.prometheus`);
- :mod:`~snakepool.tasks.worker.recovery` — a dead node's messages back on their queues,
  poison requests dead-lettered (a second bootstep on every node);
- :mod:`~snakepool.tasks.worker.results` and :mod:`~snakepool.tasks.worker.broker` —
  Celery's Redis result backend and broker transport, made to survive Redis restarts;
- :mod:`~snakepool.tasks.worker.status` — what ``snakepool status`` reports;
- :mod:`~snakepool.tasks.worker.logs` — client errors in one line; Celery's per-task lines
  only at DEBUG; the quiet mode of ``snakepool up``.

Importing :mod:`~snakepool.tasks.worker.lanes` and :mod:`~snakepool.tasks.worker.router`
registers their tasks; names here are loaded on first use, so importing this package
does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.bootstep import install
    from snakepool.tasks.worker.node import Node, current_node, live_nodes
    from snakepool.tasks.worker.options import LaneOptions, ShadowTag
    from snakepool.tasks.worker.status import collect_status

__all__ = [
    "LaneOptions",
    "Node",
    "ShadowTag",
    "collect_status",
    "create_app",
    "current_node",
    "install",
    "live_nodes",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from snakepool.tasks.worker.app import create_app

        return create_app
    if name == "install":
        from snakepool.tasks.worker.bootstep import install

        return install
    if name in ("Node", "current_node", "live_nodes"):
        from snakepool.tasks.worker import node

        return getattr(node, name)
    if name in ("LaneOptions", "ShadowTag"):
        from snakepool.tasks.worker import options

        return getattr(options, name)
    if name == "collect_status":
        from snakepool.tasks.worker.status import collect_status

        return collect_status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
