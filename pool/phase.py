"""The pool's own life, one phase at a time: requests are leased only while RUNNING.

::

    NEW ─► STARTING ─► RUNNING ─► DRAINING ─► STOPPING ─► STOPPED
                          └───────────────────────▲
    DRAINING (``Pool.begin_drain``) and STOPPING (``Pool.stop``) both refuse new requests and
    fail the queued ones with ``PoolUnavailable`` at once; the running ones finish.
"""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(enum.Enum):
    """Where a pool is in its life (:class:`~snakepool.pool.state.PoolState` keeps it)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    #: Refusing requests (the queued ones too); those running finish; ``stop()`` next.
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
