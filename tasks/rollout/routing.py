"""``decide()``: which lane a request goes to. Pure: the same inputs, the same lane.

Shared by the ``snakepool.route`` task and the zero-hop client, so both always agree.
The bucket is Unleash's: ``murmur3_32(f"{group}:{key}", seed=0) % 100 + 1``, and a key
goes to V3 when its bucket ≤ the percentage — so raising the percentage only ever moves
keys from V2-compat to V3, and each session stays where it is until it moves once.
"""

from __future__ import annotations

import uuid
from typing import Any

import mmh3

from snakepool.config.flags import RolloutFlags

__all__ = ["GROUP", "Lane", "bucket", "decide", "is_pinned"]

#: Unleash's ``groupId``: the flag's name.
GROUP = "snakepool"
Lane = str  # "v3" | "v2compat"


def bucket(key: str, group: str = GROUP) -> int:
    """The key's bucket, 1 to 100 (Unleash ``normalizedValue``)."""
    return int(mmh3.hash(f"{group}:{key}", 0, signed=False)) % 100 + 1


def decide(
    command: str,
    args: dict[str, Any] | None,
    session_id: str | None,
    flags: RolloutFlags,
    *,
    request_id: str | None = None,
) -> Lane:
    """The lane for one request.

    Order: finalized (V3 for everything) > forced lane (kill switch) > excluded command
    (V2-compat) > per-session override > V3 command allow-list > sticky percentage bucket
    of the session id (else the request id, else random). An exclusion outranks a
    session's override: it says the command itself is not ready for V3.
    """
    if flags.finalized:
        return "v3"
    if flags.forced_lane:
        return flags.forced_lane
    if command in flags.excluded_commands:
        return "v2compat"
    if session_id is not None and session_id in flags.overrides:
        return flags.overrides[session_id]
    if flags.v3_commands is not None and command not in flags.v3_commands:
        return "v2compat"
    key = session_id or request_id or uuid.uuid4().hex
    return "v3" if bucket(key) <= flags.percent else "v2compat"


def is_pinned(flags: RolloutFlags, command: str) -> bool:
    """Whether an operator pinned this command's lane: finalized, forced or excluded.

    A pinned lane is never second-guessed by the circuit breaker: after finalizing the
    V2-compat nodes may be gone, and an excluded command is excluded because V3 is wrong
    for it.
    """
    return flags.finalized or bool(flags.forced_lane) or command in flags.excluded_commands
