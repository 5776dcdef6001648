"""Lane liveness: whether a lane has a live node, as the router and zero-hop clients see it.

A lane whose every node is gone (killed, or all in a warm shutdown) would swallow its
share of the traffic: its messages wait on its queue until a node comes back (issue 9
item 5: 25 of 40 requests never resolved). So routing treats a lane with no live node
like a lane whose circuit breaker is open
(:meth:`~snakepool.tasks.rollout.breaker.CircuitBreaker.route` asks this module) and
sends its traffic to the other lane until a node serves it again. What was already
queued on the dead lane stays there and runs when a node returns.

::

    node (every heartbeat, while not stopping) ── SET lane:<lane>:alive <node> EX 4
    router / zero-hop client (at most once a second) ── EXISTS lane:v3:alive, lane:v2compat:alive
        a change seen ── SET lane:<lane>:state up|down GET ── the process that changed it
                                                             appends one audit entry

Cheap on the hot path: one pipelined round trip per :attr:`LaneLiveness.check_every`
seconds per process, whatever the traffic; no SCAN. A Redis error never diverts traffic:
the last known state stands.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import DEFAULT_PREFIX, LANES, Keys

__all__ = ["CHECK_EVERY_SECONDS", "LaneLiveness", "announce_lanes", "other_lane"]

log = logging.getLogger("snakepool.router")

#: Seconds between reads of the lanes' liveness (a lost or returning lane is seen within
#: this plus the heartbeat TTL).
CHECK_EVERY_SECONDS = 1.0
#: ``lane:<lane>:state`` values.
_UP, _DOWN = "up", "down"


def other_lane(lane: str) -> str:
    """The lane that is not ``lane``."""
    return "v2compat" if lane == "v3" else "v3"


def announce_lanes(
    pipe: redis.client.Pipeline, keys: Keys, node: str, lanes: tuple[str, ...], ttl: int
) -> None:
    """Queue on ``pipe`` the writes that say ``node`` serves ``lanes`` for ``ttl`` seconds.

    Called with every heartbeat of a node that is not stopping (lanes other than ``v3``
    and ``v2compat``, e.g. ``router``, are skipped).
    """
    for lane in lanes:
        if lane in LANES:
            pipe.set(keys.lane_alive(lane), node, ex=ttl)


class LaneLiveness:
    """Which lanes have a live node, read at most once per ``check_every`` seconds.

    Args:
        client: Redis holding the heartbeats.
        prefix: Key prefix.
        audit: Where a lane's loss and return are recorded (None: not recorded).
        who: The name the audit entries give (this router or client).
        check_every: Seconds between reads.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        audit: FlagStore | None = None,
        who: str = "snakepool",
        check_every: float = CHECK_EVERY_SECONDS,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.audit = audit
        self.who = who
        self.check_every = check_every
        # Unknown until the first read: a lane counts as served (nothing is diverted).
        self._alive: dict[str, bool] = dict.fromkeys(LANES, True)
        self._seen: dict[str, bool | None] = dict.fromkeys(LANES, None)
        self._checked = float("-inf")

    def serves(self, lane: str) -> bool:
        """Whether some live node serves ``lane`` (as of at most ``check_every`` s ago)."""
        self._refresh(time.monotonic())
        return self._alive.get(lane, True)

    def snapshot(self) -> dict[str, bool]:
        """``{lane: has a live node}`` for both lanes."""
        self._refresh(time.monotonic())
        return dict(self._alive)

    def _refresh(self, now: float) -> None:
        if now - self._checked < self.check_every:
            return
        self._checked = now
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for lane in LANES:
                    pipe.exists(self.keys.lane_alive(lane))
                found = pipe.execute()
        except redis.RedisError as exc:
            log.debug("lane liveness not read (%s); keeping the last known state", exc)
            return
        for lane, exists in zip(LANES, found, strict=True):
            alive = bool(exists)
            self._alive[lane] = alive
            if self._seen[lane] is not alive:
                self._seen[lane] = alive
                self._record(lane, alive)

    def _record(self, lane: str, alive: bool) -> None:
        """Audit a change of ``lane``'s liveness once, whichever process saw it first."""
        if self.audit is None:
            return
        state = _UP if alive else _DOWN
        try:
            previous = self.client.set(self.keys.lane_state(lane), state, get=True)
            if isinstance(previous, bytes):
                previous = previous.decode()
            # A lane seen up for the first time is the normal start: nothing to say.
            if previous == state or (previous is None and alive):
                return
            self.audit.note(who=self.who, why=_reason(lane, alive), details=_details(lane, alive))
        except redis.RedisError as exc:
            log.warning("lane %s %s, but the audit trail could not say so: %s", lane, state, exc)


def _reason(lane: str, alive: bool) -> str:
    if alive:
        return f"lane {lane} has a live node again: it gets its own traffic back"
    return (
        f"lane {lane} has no live node: its traffic goes to {other_lane(lane)} "
        "(what is queued on it runs when a node returns)"
    )


def _details(lane: str, alive: bool) -> dict[str, Any]:
    return {
        "event": "lane_up" if alive else "lane_down",
        "lane": lane,
        "traffic_to": lane if alive else other_lane(lane),
    }
