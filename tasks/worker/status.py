"""What ``snakepool status`` reports: nodes, their pools, queues, lanes, rollout."""

from __future__ import annotations

from typing import Any

import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.tasks.rollout.liveness import LaneLiveness, other_lane
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import ShadowRecorder
from snakepool.tasks.worker.app import LANE_QUEUES, ROUTER_QUEUE
from snakepool.tasks.worker.node import live_nodes
from snakepool.tasks.worker.pop_defer import deferred_list

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
    "shadow_queued": {lane: shadow copies waiting to run there}, "shadow_dropped": copies
    trimmed from a backlog over the cap, since the start, "shadow_expired": copies
    discarded unrun, older than their pair record,
    "lanes": {"v3": {..., "live_nodes", "serving"}, "v2compat": {...}},
    "shedding": {lane: why}, "rollout": {"percent", "version", ...}}``. A lane with no
    live node has ``serving: false`` and, while the other lane has one, appears in
    ``shedding``: its new traffic goes to the other lane.
    """
    keys = Keys(prefix)
    metrics = LaneMetrics(client, prefix=prefix)
    queues = (ROUTER_QUEUE, *LANE_QUEUES)
    nodes = live_nodes(client, keys)
    serving = LaneLiveness(client, prefix=prefix, check_every=0).snapshot()
    return {
        "nodes": nodes,
        "queues": {q: _queue_depth(broker, q) if broker is not None else None for q in queues},
        "shadow_queued": {
            lane: _queue_depth(broker, deferred_list(lane)) if broker is not None else None
            for lane in LANE_QUEUES
        },
        "lanes": {
            lane: {
                **metrics.summary(lane),
                "last_60s": metrics.window(lane, 60),
                "live_nodes": sum(
                    lane in n.get("lanes", ()) and not n.get("stopping") for n in nodes
                ),
                "serving": serving[lane],
            }
            for lane in LANE_QUEUES
        },
        "shedding": {
            lane: f"no live node: new traffic goes to {other_lane(lane)}"
            for lane in LANE_QUEUES
            if not serving[lane] and serving[other_lane(lane)]
        },
        "rollout": FlagStore(client, prefix=prefix).read().to_dict(),
        "shadow": ShadowRecorder(client, prefix=prefix).counts(),
        "shadow_dropped": int(client.hget(keys.shadow_counts, "dropped") or 0),
        "shadow_expired": int(client.hget(keys.shadow_counts, "expired") or 0),
    }
