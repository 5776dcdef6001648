"""Redis commands per request, from ``INFO commandstats`` of the benchmark's own server.

Snapshots before and after each timed window of a side are subtracted, so each side is
charged only the commands sent while it ran — by everyone: the clients, the worker
serving it, and the idle worker of the other sides (heartbeats, its idle ``BRPOP``
time-outs: a few per second against hundreds of requests). The snapshots' own ``INFO``
calls are left out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

__all__ = ["CommandCounter", "commands_per_request", "top_commands"]

#: The command the snapshots themselves send.
_OWN = "info"


def _snapshot(client: redis.Redis) -> Counter[str]:
    stats: dict[str, Any] = client.info("commandstats")
    counts: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name != _OWN and isinstance(value, dict):
            counts[name] = int(value.get("calls", 0))
    return counts


class CommandCounter:
    """Commands sent during the windows of each side, by command name.

    Args:
        client: A connection to the benchmark's redis-server.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.by_side: dict[str, Counter[str]] = {}
        self._before: Counter[str] | None = None

    def start(self) -> None:
        """Take the snapshot a window starts from."""
        self._before = _snapshot(self.client)

    def stop(self, side: str) -> Counter[str]:
        """Charge the commands since :meth:`start` to ``side``; returns them."""
        if self._before is None:
            raise RuntimeError("stop() without start()")
        after = _snapshot(self.client)
        used = Counter({name: after[name] - self._before.get(name, 0) for name in after})
        used = +used  # drops commands nobody sent in this window
        self.by_side.setdefault(side, Counter()).update(used)
        self._before = None
        return used


def commands_per_request(counts: Counter[str], requests: int) -> float:
    """All commands of a side divided by the requests it completed."""
    return sum(counts.values()) / max(requests, 1)


def top_commands(counts: Counter[str], requests: int, limit: int = 8) -> str:
    """``lpush 1.00, brpop 1.02, …``: the busiest commands per request, busiest first."""
    per_request = {name: calls / max(requests, 1) for name, calls in counts.items()}
    ranked = sorted(per_request.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{name} {value:.2f}" for name, value in ranked[:limit] if value >= 0.005]
    rest = sum(value for _, value in ranked[limit:])
    if rest >= 0.005:
        shown.append(f"other {rest:.2f}")
    return ", ".join(shown)
