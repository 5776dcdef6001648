"""What ``snakepool status`` reports: nodes, their pools, queues, lanes, rollout."""

from __future__ import annotations

from typing import Any

import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import ShadowRecorder
from snakepool.tasks.worker.app import LANE_QUEUES, ROUTER_QUEUE
from snakepool.tasks.worker.node import live_nodes

__all__ = ["collect_status"]


def _queue_depth(client: redis.Redis, queue: str) -> int | None:
    # kombu's Redis transport keeps a queue as a list named after it.
    try:
        return int(client.llen(queue))
    except redis.RedisError:
        return None


def collect_status(client: redis.Redis, broker: redis.Redis | None, prefix: str) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data.

    Shape: ``{"nodes": [{"name", "lanes", "pool": {...}}], "queues": {name: depth},
    "lanes": {"v3": {...}, "v2compat": {...}}, "rollout": {"percent", "version", ...}}``.
    """
    keys = Keys(prefix)
    metrics = LaneMetrics(client, prefix=prefix)
    queues = (ROUTER_QUEUE, *LANE_QUEUES)
    return {
        "nodes": live_nodes(client, keys),
        "queues": {q: _queue_depth(broker, q) if broker is not None else None for q in queues},
        "lanes": {
            lane: {**metrics.summary(lane), "last_60s": metrics.window(lane, 60)}
            for lane in LANE_QUEUES
        },
        "rollout": FlagStore(client, prefix=prefix).read().to_dict(),
        "shadow": ShadowRecorder(client, prefix=prefix).counts(),
    }
