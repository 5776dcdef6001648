"""snakepool: warm Python interpreter pools behind Celery, with a safe V2 → V3 rollout.

The one import package of the distribution. The repository's top-level folders are its
subpackages — ``config/`` is :mod:`snakepool.config`, ``pool/`` :mod:`snakepool.pool`,
``sessions/`` :mod:`snakepool.sessions`, ``tasks/`` :mod:`snakepool.tasks` — through the
symbolic links in this folder (``snakepool/pool -> ../pool``), so the source tree, the
installed wheel and every tool (pytest, mypy, ruff) see the same names.

Public API (loaded lazily, so ``import snakepool.errors`` or an interpreter importing
:mod:`snakepool.pool.interpreter` never pays for Celery or Redis)::

    from snakepool import Client, Pool   # app code: enqueue work; run a pool in-process
    from snakepool import AsyncClient    # the same as Client, awaitable (asyncio apps)
    from snakepool import errors         # the one error tree, SnakepoolError at its root
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from snakepool import errors
from snakepool.errors import SnakepoolError

if TYPE_CHECKING:
    from snakepool.pool.pool import Pool
    from snakepool.tasks.async_client import AsyncClient
    from snakepool.tasks.client import Client

__all__ = ["AsyncClient", "Client", "Pool", "SnakepoolError", "errors"]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from snakepool.tasks.async_client import AsyncClient

        return AsyncClient
    if name == "Client":
        from snakepool.tasks.client import Client

        return Client
    if name == "Pool":
        from snakepool.pool.pool import Pool

        return Pool
    raise AttributeError(f"module 'snakepool' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazily loaded names too (dir() did not list Client, AsyncClient or Pool).
    return sorted({*globals(), *__all__})
