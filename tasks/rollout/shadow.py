"""Shadow traffic: a sampled copy of read-only requests runs on the other lane.

The router (or the zero-hop client) sends the copy fire-and-forget after deciding the
primary lane, so the primary is never delayed or altered; the copy goes out with the
lowest priority, and nodes run it only when live traffic leaves room
(:mod:`~snakepool.tasks.worker.pop_defer`). Each lane task records its
outcome under the request id; the second to arrive gets both (one Lua script: the pair
is compared exactly once) and the :class:`~snakepool.tasks.rollout.comparator.Comparator` decides.
Mismatches, with both values and the differences, go to a capped list.
"""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

import redis

from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import DEFAULT_PREFIX, Keys
from snakepool.config.limits import SHADOW_COMMAND_CHARS
from snakepool.config.quoting import describe
from snakepool.errors import InvalidArguments
from snakepool.sessions.scripts import lua
from snakepool.sessions.shadow_records import compact_outcome, mismatch_entry
from snakepool.tasks.rollout.comparator import Comparator

__all__ = [
    "PAIR_ID",
    "CommandCatalog",
    "ShadowRecorder",
    "is_pair_id",
    "outcome_of",
    "should_shadow",
]

#: Seconds a lone outcome waits for the other lane's.
PAIR_TTL = 300
#: Mismatches kept.
MAX_MISMATCHES = 1000
#: Seconds the catalog of command flags is cached.
CATALOG_MAX_AGE = 10.0
#: A pair is recorded under its request id, which our client and router make with
#: ``uuid4().hex``. Checked with a full match before it becomes part of a key: the pair
#: keys share their namespace with ``shadow:counts`` and ``shadow:mismatches``.
PAIR_ID = re.compile(r"[0-9a-f]{32}")


def is_pair_id(value: object) -> bool:
    """Whether ``value`` is a request id a shadow pair may be recorded under."""
    return isinstance(value, str) and PAIR_ID.fullmatch(value) is not None


class CommandCatalog:
    """Which commands are read-only, as the lane nodes published it (cached)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._flags: dict[str, dict[str, bool]] = {}
        self._read_at = float("-inf")

    def read_only(self, command: str) -> bool:
        """True only for commands a node declared ``read_only``."""
        now = time.monotonic()
        if now - self._read_at > CATALOG_MAX_AGE:
            raw = self.client.hgetall(self.keys.commands)
            self._flags = {_text(k): json.loads(v) for k, v in raw.items()}
            self._read_at = now
        return bool(self._flags.get(command, {}).get("read_only"))


def should_shadow(flags: RolloutFlags, command: str, catalog: CommandCatalog) -> bool:
    """Whether to send a shadow copy of this request (never once finalized: the
    V2-compat nodes may be gone)."""
    if not flags.shadow or flags.forced_lane or flags.finalized:
        return False
    return catalog.read_only(command) and random.random() < flags.shadow_rate  # noqa: S311


def outcome_of(result: Any, error: BaseException | None) -> dict[str, Any]:
    """The JSON-able outcome of one lane's run."""
    if error is None:
        return {"ok": True, "value": result}
    return {"ok": False, "error": {"type": type(error).__name__, "message": str(error)[:500]}}


class ShadowRecorder:
    """Pairs the two outcomes of shadowed requests and keeps the comparison figures."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        comparator: Comparator | None = None,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.comparator = comparator or Comparator()
        self._record = client.register_script(lua("shadow_record"))

    def record(
        self, request_id: str, role: str, lane: str, command: str, outcome: dict[str, Any]
    ) -> list[str] | None:
        """Store this lane's outcome; if the other one is in, compare and return the diffs.

        Large outcomes are stored compacted (``sessions.shadow_records``): bounded keys.

        Raises:
            InvalidArguments: ``request_id`` is not one of our request ids, or ``role`` is
                neither ``primary`` nor ``shadow``.
        """
        if not is_pair_id(request_id) or role not in ("primary", "shadow"):
            raise InvalidArguments(f"not a shadow pair: {describe(request_id)}, {describe(role)}")
        outcome = compact_outcome(outcome, ignored_keys=self.comparator.ignored_keys)
        command = command[:SHADOW_COMMAND_CHARS]
        payload = json.dumps({"lane": lane, "command": command, **outcome}, default=str)
        flat = self._record(keys=[self.keys.shadow(request_id)], args=[role, payload, PAIR_TTL])
        if not flat:
            return None  # first to arrive: the other lane will compare
        pair = {_text(k): json.loads(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        primary, shadow = pair["primary"], pair["shadow"]
        diffs = self.comparator.compare(primary, shadow)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.shadow_counts, "compared", 1)
            pipe.hincrby(self.keys.shadow_counts, "mismatched" if diffs else "matched", 1)
            if diffs:
                entry = mismatch_entry(request_id, command, primary, shadow, diffs, at=time.time())
                pipe.lpush(self.keys.shadow_mismatches, entry)
                pipe.ltrim(self.keys.shadow_mismatches, 0, MAX_MISMATCHES - 1)
            pipe.execute()
        return diffs

    def counts(self) -> dict[str, int]:
        """Comparisons made, matched and mismatched."""
        raw = self.client.hgetall(self.keys.shadow_counts)
        counts = {_text(k): int(v) for k, v in raw.items()}
        return {k: counts.get(k, 0) for k in ("compared", "matched", "mismatched")}

    def mismatches(self, count: int = 20) -> list[dict[str, Any]]:
        """The newest mismatches, with both outcomes and the differences."""
        return [
            json.loads(m) for m in self.client.lrange(self.keys.shadow_mismatches, 0, count - 1)
        ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
