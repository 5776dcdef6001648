"""Facts a node reports in its heartbeat beside its pool's stats: its snakepool version
and its interpreters' memory.

``snakepool check`` compares the versions (every node must run the same one) and
``snakepool report`` shows the memory per node.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import psutil

__all__ = ["UNKNOWN_VERSION", "interpreter_memory", "snakepool_version"]

#: What a node reports when the distribution's metadata cannot be found (a source tree
#: that was never installed).
UNKNOWN_VERSION = "unknown"


@functools.cache
def snakepool_version() -> str:
    """The installed snakepool distribution's version (read once per process)."""
    try:
        return metadata.version("snakepool")
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def interpreter_memory(pids: Iterable[int]) -> dict[str, Any]:
    """The resident memory of the interpreters ``pids`` (psutil, as recycling measures it).

    Returns:
        ``{"interpreters": n, "rss_bytes": total, "max_rss_bytes": largest}`` over the
        interpreters still alive (one that exits while being measured is left out).
    """
    sizes = []
    for pid in pids:
        try:
            sizes.append(int(psutil.Process(pid).memory_info().rss))
        except psutil.Error:
            continue
    return {
        "interpreters": len(sizes),
        "rss_bytes": sum(sizes),
        "max_rss_bytes": max(sizes, default=0),
    }
