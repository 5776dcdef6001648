"""The worker bootstep: one snakepool node (and its pool) per Celery worker process.

Added to the worker blueprint, it starts before the consumer — so a node never takes
a task before its interpreters are ready — and stops after it. Its ``info()`` is merged
into ``celery inspect stats``, which is what Flower's worker page shows: the pool's
figures appear in Flower with no plug-in, one row each (``snakepool_pool_idle``, …).

Stop order on a warm shutdown (SIGTERM), the reverse of the start order::

    Consumer.stop   cancel the task consumer: nothing more is received
    NodeStep.stop   Node.shutdown(SHUTDOWN_GRACE): lane requests that have not started
                    are requeued; the started ones run to their end; then the pool stops
    Pool.stop       Celery's threads: whatever is still queued there is cancelled, and
                    its message goes back to the broker when the connection closes

The node used to stop its pool after 10 s here, before Celery's threads had finished:
a 14 s request then failed with ``PoolUnavailable`` and was acknowledged, so lost.
"""

from __future__ import annotations

from typing import Any, ClassVar

from celery import Celery, bootsteps

from snakepool.tasks.worker.node import Node
from snakepool.tasks.worker.recovery.step import RecoveryStep
from snakepool.tasks.worker.results import ResilientRedisBackend

__all__ = ["NodeStep", "flat_info", "install"]


class NodeStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts this worker's :class:`~snakepool.tasks.worker.node.Node`; stops it on shutdown."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.node: Node | None = None

    def start(self, worker: Any) -> None:
        """Start the node (interpreters ready before the consumer starts)."""
        app = worker.app
        self.node = Node(app.snakepool_settings, name=worker.hostname, lanes=app.snakepool_lanes)
        if isinstance(app.backend, ResilientRedisBackend):  # the lane figures ride along
            self.node.metrics.with_results = True
            app.snakepool_result_rider = self.node.metrics
        self.node.start()

    def stop(self, worker: Any) -> None:
        """Warm shutdown: requests in flight get ``SHUTDOWN_GRACE`` to finish."""
        if self.node is not None:
            self.node.shutdown()
            self.node = None

    def terminate(self, worker: Any) -> None:
        """Cold shutdown: stop at once (what was running is requeued by the lanes)."""
        if self.node is not None:
            self.node.stop(grace=0)
            self.node = None

    def shutdown(self, worker: Any) -> None:
        """Same as terminate."""
        self.terminate(worker)

    def info(self, worker: Any) -> dict[str, Any]:
        """Merged into ``celery inspect stats`` (and so into Flower's worker page).

        Flat: one top-level key per figure (``snakepool_pool_idle``: 2), so Flower shows
        each as a row of its own instead of one nested dict (see :func:`flat_info`).
        """
        if self.node is None:
            return {"snakepool_node": None}
        return flat_info(self.node.describe())


def flat_info(described: dict[str, Any]) -> dict[str, Any]:
    """A node's :meth:`~snakepool.tasks.worker.node.Node.describe` as scalar top-level keys.

    ``{"name": "v3-1@h", "pool": {"idle": 2}}`` → ``{"snakepool_node": "v3-1@h",
    "snakepool_pool_idle": 2}``: nested dicts are joined with ``_``, lists become
    comma-separated text, and every key starts ``snakepool_``.
    """
    flat: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                put(f"{prefix}_{key}", inner)
        elif isinstance(value, list | tuple):
            flat[prefix] = ",".join(str(item) for item in value)
        else:
            flat[prefix] = value

    for key, value in described.items():
        put("snakepool_node" if key == "name" else f"snakepool_{key}", value)
    return flat


def install(app: Celery, lanes: tuple[str, ...]) -> None:
    """Make workers of ``app`` host a node serving ``lanes`` (and recover dead nodes')."""
    app.snakepool_lanes = lanes
    app.steps["worker"].add(NodeStep)
    app.steps["worker"].add(RecoveryStep)
