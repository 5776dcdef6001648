"""Commands every interpreter has, whatever its adapter: ``ping`` and ``get_stats``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from snakepool.pool.interpreter.marks import command

__all__ = ["get_stats", "ping", "process_stats"]


class _ProcessStats:
    """This interpreter's own counters; reset in each interpreter after fork."""

    def __init__(self) -> None:
        self.reset(adapter="")

    def reset(self, *, adapter: str) -> None:
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.requests = 0
        self.errors = 0
        self.adapter = adapter


#: Updated by the server loop; read by ``get_stats``.
process_stats = _ProcessStats()

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: peak RSS is the best the stdlib offers
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@command(read_only=True)
def ping(args: dict[str, Any]) -> dict[str, Any]:
    """Liveness check: ``{"pong": true, "pid": ...}``."""
    return {"pong": True, "pid": process_stats.pid}


@command(read_only=True)
def get_stats(args: dict[str, Any]) -> dict[str, Any]:
    """This interpreter's own figures: pid, requests, errors, uptime, RSS, adapter."""
    return {
        "pid": process_stats.pid,
        "requests": process_stats.requests,
        "errors": process_stats.errors,
        "uptime_s": round(time.monotonic() - process_stats.started, 3),
        "rss_bytes": _rss_bytes(),
        "adapter": process_stats.adapter,
        "python": sys.version.split()[0],
    }
