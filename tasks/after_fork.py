"""Clients made before the process forks keep working in the child (gunicorn ``--preload``).

A forked child inherits its parent's objects but only the thread that forked: every
other thread is gone, and the sockets are shared with the parent. A client that keeps
connections, subscriptions, locks or a thread pool must build them anew in the child —
a ``ThreadPoolExecutor`` whose threads stayed in the parent still counts them as idle
and never starts one, so every call submitted to it waits for ever.

Each such object registers here and gets its ``_after_fork()`` called in every child,
``os.fork`` and ``multiprocessing``'s fork context alike (both run the
``register_at_fork`` handlers). What it inherited is handed to :func:`keep_inherited`
and never closed: closing it would shut sockets the parent still uses.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol

__all__ = ["Renewable", "forget", "keep_inherited", "renew_after_fork"]


class Renewable(Protocol):
    """An object that builds its connections, locks and threads anew in a child."""

    def _after_fork(self) -> None: ...


#: Every live object to renew in a child, in the order they were made.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
#: What children inherited from their parent: kept alive, so it is never closed here.
_INHERITED: list[object] = []


def renew_after_fork(obj: Renewable) -> None:
    """Call ``obj._after_fork()`` in every child forked while ``obj`` lives."""
    _LIVE.add(obj)


def forget(obj: Renewable) -> None:
    """Stop renewing ``obj`` (it was closed)."""
    _LIVE.discard(obj)


def keep_inherited(*objects: object) -> None:
    """Keep what a child inherited alive and unclosed (its sockets are the parent's)."""
    _INHERITED.extend(objects)


def _renew_all() -> None:
    # In no particular order: each object renews only what it owns itself.
    for obj in list(_LIVE):
        obj._after_fork()


os.register_at_fork(after_in_child=_renew_all)
