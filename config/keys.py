"""Every Redis key and channel snakepool uses, built in one place.

All keys live under one configurable prefix (setting ``KEY_PREFIX``, default
``snakepool:``), so several deployments can share a Redis and ``SCAN prefix*`` finds
everything of one of them.

A key built from an id (session, node, request) or a lane checks it first, so no
malformed id ever becomes a key, and keys per lane stay within the two lanes. How
each key is bounded (TTL, cap, pruned index) and what it costs: ``docs/redis-keys.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from snakepool.config.ids import (
    SESSION_ID,
    validate_incarnation,
    validate_node_name,
    validate_request_id,
    validate_session_id,
)
from snakepool.errors import InvalidArguments

__all__ = ["DEFAULT_PREFIX", "LANES", "SESSION_ID", "Keys", "validate_session_id"]

#: Prefix of every key.
DEFAULT_PREFIX = "snakepool:"
#: The two lanes traffic is split between.
LANES = ("v3", "v2compat")
#: ``shadow:<name>`` keys that are not a request's pair record.
_SHADOW_NAMES = frozenset({"mismatches", "counts"})


def _lane(lane: str) -> str:
    if lane not in LANES:
        raise InvalidArguments(f"unknown lane {str(lane)[:40]!r}: one of {', '.join(LANES)}")
    return lane


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix.

    Every builder that takes an id or a lane raises ``InvalidArguments`` when it is
    malformed (see :mod:`snakepool.config.ids`) or not one of :data:`LANES`.
    """

    prefix: str = DEFAULT_PREFIX

    def session(self, session_id: str) -> str:
        """Hash: created, last_access, ttl, metadata, v2 binding (TTL: the session's)."""
        return f"{self.prefix}session:{validate_session_id(session_id)}"

    def programs(self, session_id: str) -> str:
        """Hash: program id → definition JSON (one field each: no clobbering; TTL: the
        session's; at most ``MAX_PROGRAMS_PER_SESSION`` fields).

        Its own namespace, not ``session:{id}:programs``: session ids may hold ``:``, and
        the session ``a:programs`` would otherwise own the key of session ``a``'s programs.
        """
        return f"{self.prefix}programs:{validate_session_id(session_id)}"

    @property
    def session_index(self) -> str:
        """Sorted set of session ids scored by expiry time (server clock, seconds).

        Every write pushes a session's score to its new expiry and drops the members
        whose expiry has passed, so it holds the live sessions and no more.
        """
        return f"{self.prefix}sessions"

    @property
    def rollout(self) -> str:
        """String: the rollout flags as JSON, with their version inside."""
        return f"{self.prefix}rollout"

    @property
    def rollout_version(self) -> str:
        """Integer: the flags' version (cheap to poll)."""
        return f"{self.prefix}rollout:version"

    @property
    def audit(self) -> str:
        """Stream: every flag change (who, why, old → new); exact ``MAXLEN``."""
        return f"{self.prefix}audit"

    def node(self, name: str) -> str:
        """String with TTL: a worker node's heartbeat (JSON)."""
        return f"{self.prefix}node:{validate_node_name(name)}"

    def lane_alive(self, lane: str) -> str:
        """String with TTL: the name of the last node that announced serving ``lane``.

        Every node serving the lane sets it at each heartbeat (TTL ``HEARTBEAT_TTL``) and
        stops when its warm shutdown begins, so it exists exactly while some node serves
        the lane: one ``EXISTS`` tells a router whether the lane has a live node.
        """
        return f"{self.prefix}lane:{_lane(lane)}:alive"

    def lane_state(self, lane: str) -> str:
        """String: ``up`` or ``down``, the last liveness change of ``lane`` recorded in the
        audit trail (so many routers noticing the same change audit it once)."""
        return f"{self.prefix}lane:{_lane(lane)}:state"

    @property
    def node_pattern(self) -> str:
        """SCAN pattern for every node heartbeat."""
        return f"{self.prefix}node:*"

    @property
    def commands(self) -> str:
        """Hash: command name → its flags (read_only, idempotent), from the lanes."""
        return f"{self.prefix}commands"

    def lane_metrics(self, lane: str) -> str:
        """Hash: per-lane counters (requests, errors, client_errors)."""
        return f"{self.prefix}metrics:{_lane(lane)}"

    def lane_latencies(self, lane: str) -> str:
        """Sorted set: the lane's latency samples, scored by when each request finished
        (Unix seconds), member ``<ms>:<unique id>``; capped to the newest."""
        return f"{self.prefix}latencies:{_lane(lane)}"

    def lane_window(self, lane: str, second: int) -> str:
        """Hash with TTL: one second of a lane's counters (for windowed rates)."""
        return f"{self.prefix}window:{_lane(lane)}:{int(second)}"

    def shadow(self, request_id: str) -> str:
        """Hash with TTL: the two outcomes of one shadowed request (each compacted).

        The names of the other ``shadow:`` keys are refused as request ids: a request
        called ``counts`` would otherwise pair its outcome with the comparison counters.
        """
        if validate_request_id(request_id) in _SHADOW_NAMES:
            raise InvalidArguments(f"request id {request_id!r} is reserved")
        return f"{self.prefix}shadow:{request_id}"

    @property
    def shadow_mismatches(self) -> str:
        """List (capped): shadow comparisons that differed."""
        return f"{self.prefix}shadow:mismatches"

    @property
    def shadow_counts(self) -> str:
        """Hash: shadow comparisons made / matched / mismatched."""
        return f"{self.prefix}shadow:counts"

    @property
    def controller_lease(self) -> str:
        """String with TTL: the id of the rollout controller allowed to act (its lease)."""
        return f"{self.prefix}controller:lease"

    @property
    def controller_fence(self) -> str:
        """String (integer): the fencing token of the newest lease acquisition; each
        acquisition increments it in the same transaction that takes the lease."""
        return f"{self.prefix}controller:fence"

    # ------------------------------------------------ node deaths, dead letters
    # These live in the BROKER's Redis (with kombu's ``unacked`` hash), so that moving a
    # dead node's messages and counting the deaths is one atomic script.

    @property
    def inflight_index(self) -> str:
        """Sorted set: node incarnation → when its heartbeat expires (Redis clock).

        Every node refreshes its own score every second; a score in the past is a dead
        node, whose entry is removed once its messages are back on their queues.
        """
        return f"{self.prefix}inflight"

    def inflight(self, incarnation: str) -> str:
        """Hash: one node incarnation's received, unfinished messages (delivery tag →
        unacked score and JSON), plus ``~node`` (its name); TTL refreshed by its beat."""
        return f"{self.prefix}inflight:{validate_incarnation(incarnation)}"

    def processing(self, incarnation: str) -> str:
        """List: messages one node incarnation has popped off its queues and not yet
        recorded as unacknowledged (its reliable pop, ``tasks/worker/pop.py``), each for
        milliseconds; at most its prefetch count plus one per list it consumes; TTL
        refreshed by its beat; deleted once settled."""
        return f"{self.prefix}processing:{validate_incarnation(incarnation)}"

    def recovery_lock(self, incarnation: str) -> str:
        """String with TTL: held by the survivor returning a dead node's messages."""
        return f"{self.prefix}recovering:{validate_incarnation(incarnation)}"

    def deaths(self, task_id: str) -> str:
        """List with TTL: the deliveries of one request that ended with their node's
        death (JSON each: node, received, started, noticed); capped."""
        return f"{self.prefix}deaths:{validate_request_id(task_id)}"

    @property
    def dead_letter_index(self) -> str:
        """Sorted set: dead-lettered task id → when its record expires (Redis clock)."""
        return f"{self.prefix}deadletters"

    @property
    def dead_letter_unreported(self) -> str:
        """Set: dead-lettered task ids whose caller has not been sent ``DeadLettered``."""
        return f"{self.prefix}deadletters:unreported"

    @property
    def dead_letter_prefix(self) -> str:
        """What :meth:`dead_letter` puts before the task id (for the Lua scripts)."""
        return f"{self.prefix}deadletter:"

    def dead_letter(self, task_id: str) -> str:
        """Hash with TTL: one dead letter (message, meta, deliveries, at)."""
        return f"{self.dead_letter_prefix}{validate_request_id(task_id)}"
