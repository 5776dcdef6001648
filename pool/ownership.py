"""Which process a pool belongs to: the one that started it, never a fork of it.

A forked child (``os.fork``, multiprocessing's ``fork`` start method, a pre-forking
server such as gunicorn ``--preload``) inherits a started pool's pipes, but not its
supervisor thread. If it used them, its requests and the parent's would run on the same
interpreters and read each other's replies (the parent sees "protocol violation: reply
to another request" and loses an interpreter). So a pool remembers the pid that started
it, and in any other process it serves nothing and stops nothing.
"""

from __future__ import annotations

import os

from snakepool import errors

__all__ = ["Ownership"]


class _ThisProcess:
    """This process's pid, refreshed in a forked child: pools compare it with their
    owner's on every request, and ``os.getpid()`` is a system call."""

    pid = os.getpid()


def _refresh_pid() -> None:
    _ThisProcess.pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


class Ownership:
    """The process a pool belongs to, once it is started."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        #: The pid of the process that started the pool (None before it is started).
        self.pid: int | None = None

    @property
    def elsewhere(self) -> bool:
        """Whether the pool was started by another process (this one is a fork of it)."""
        return self.pid is not None and self.pid != _ThisProcess.pid

    def claim(self) -> None:
        """Make this process the owner (at ``start``).

        Raises:
            PoolUnavailable: the pool was started by another process.
        """
        if self.elsewhere:
            raise self.refusal()
        self.pid = _ThisProcess.pid

    def refusal(self) -> errors.PoolUnavailable:
        """The error for a forked child that tries to use its parent's pool.

        Data: ``owner_pid`` (the process that started the pool), ``pid`` (this one).
        """
        return errors.PoolUnavailable(
            f"this Pool was started by process {self.pid}, and this process "
            f"({_ThisProcess.pid}) was forked from it: the pool's interpreters serve the "
            "parent, so a forked child cannot use them — start a Pool in the child, or "
            "create the pool after forking",
            owner_pid=self.pid,
            pid=_ThisProcess.pid,
        )
