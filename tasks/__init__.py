"""The distributed side of snakepool: Celery lanes, routing and rollout, client, CLI.

Four concerns, one sub-package (or module) each; dependencies point down this list only::

    cli/      the ``snakepool`` command line, one module per command (group)
    local/    running it on one machine: the process launcher, the demos
    client    the API for application code: ``from snakepool.tasks.client import Client``
              (and ``async_client``: ``AsyncClient``, the same awaitable, waiting through
              ``result_poller``)
    worker/   the Celery side: app, bootstep + node, router and lane tasks, dispatch,
              the lane pipeline (validate → run → retries → metrics → shadow → V2)
    rollout/  routing (``decide``), lane metrics, breaker, shadow + comparator, controller

``decide()`` is :func:`snakepool.tasks.rollout.routing.decide` (also
``snakepool.tasks.rollout.decide``). ``Client`` is loaded on first use: importing this
package does not import Celery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.async_client import AsyncClient
    from snakepool.tasks.client import Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from snakepool.tasks.async_client import AsyncClient

        return AsyncClient
    if name == "Client":
        from snakepool.tasks.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
