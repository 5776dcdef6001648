"""Every Redis key and channel snakepool uses, built in one place.

All keys live under one configurable prefix (setting ``KEY_PREFIX``, default
``snakepool:``), so several deployments can share a Redis and ``SCAN prefix*`` finds
everything of one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "SESSION_ID", "Keys", "validate_session_id"]

#: Prefix of every key.
DEFAULT_PREFIX = "snakepool:"
#: Session ids: 1-128 characters of letters, digits and ``_ . : -``.
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if valid.

    Raises:
        InvalidArguments: not 1-128 characters of ``[A-Za-z0-9_.:-]``.
    """
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        from snakepool.errors import InvalidArguments

        raise InvalidArguments(
            f"invalid session id {str(session_id)[:40]!r}: "
            "use 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
    return session_id


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def session(self, session_id: str) -> str:
        """Hash: created, last_access, ttl, metadata, v2 binding."""
        return f"{self.prefix}session:{session_id}"

    def programs(self, session_id: str) -> str:
        """Hash: program id → definition JSON (one field each: no clobbering)."""
        return f"{self.prefix}session:{session_id}:programs"

    @property
    def session_index(self) -> str:
        """Sorted set of session ids scored by creation time (for listing)."""
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
        """Stream: every flag change (who, why, old → new)."""
        return f"{self.prefix}audit"

    def node(self, name: str) -> str:
        """String with TTL: a worker node's heartbeat (JSON)."""
        return f"{self.prefix}node:{name}"

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
        return f"{self.prefix}metrics:{lane}"

    def lane_latencies(self, lane: str) -> str:
        """List: the lane's most recent latencies in ms (capped)."""
        return f"{self.prefix}latency:{lane}"

    def lane_window(self, lane: str, second: int) -> str:
        """Hash with TTL: one second of a lane's counters (for windowed rates)."""
        return f"{self.prefix}window:{lane}:{second}"

    def shadow(self, request_id: str) -> str:
        """Hash with TTL: the two results of one shadowed request."""
        return f"{self.prefix}shadow:{request_id}"

    @property
    def shadow_mismatches(self) -> str:
        """List (capped): shadow comparisons that differed."""
        return f"{self.prefix}shadow:mismatches"

    @property
    def shadow_counts(self) -> str:
        """Hash: shadow comparisons made / matched / mismatched."""
        return f"{self.prefix}shadow:counts"
