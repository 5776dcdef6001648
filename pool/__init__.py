"""The interpreter pool: warm Python interpreters behind a small, thread-safe API.

``from snakepool.pool import Pool`` (or ``from snakepool import Pool``). This package
knows nothing of Celery or Redis. Its public
names are loaded lazily because every interpreter imports this package on its way to
:mod:`snakepool.pool.interpreter`, and must not pay for the parent side (pydantic, psutil).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.pool.hooks import PoolObserver
    from snakepool.pool.pool import Pool

__all__ = ["Pool", "PoolObserver"]


def __getattr__(name: str) -> Any:
    if name == "Pool":
        from snakepool.pool.pool import Pool

        return Pool
    if name == "PoolObserver":
        from snakepool.pool.hooks import PoolObserver

        return PoolObserver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
