"""Whether anything would serve a request now: the lanes it may go to, and the live
nodes (heartbeats) serving them — checked before publishing, so a request nobody
would take fails at once instead of waiting in a queue for a node that never comes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from snakepool.config.flags import RolloutFlags
from snakepool.tasks.rollout.routing import decide

__all__ = ["possible_lanes", "unserved"]


def possible_lanes(
    command: str, args: dict[str, Any] | None, session_id: str | None, flags: RolloutFlags
) -> list[str]:
    """Every lane ``decide`` may pick for this request under ``flags``.

    A session's lane is sticky (its bucket), so there is one; without a session the key
    is the request id, unknown before sending: whichever lanes the percentage's two ends
    give (one when the lane is pinned, by the kill switch, an exclusion, the allow-list
    or finalizing; both for 0 < percent < 100).
    """
    if session_id is not None:
        return [decide(command, args, session_id, flags)]
    ends = (0, 100) if 0 < flags.percent < 100 else (flags.percent,)
    lanes = {
        decide(command, args, None, replace(flags, percent=percent), request_id="-")
        for percent in ends
    }
    return sorted(lanes)


def unserved(queues: Iterable[str], nodes: Sequence[dict[str, Any]]) -> list[str]:
    """The ``queues`` (``router``, ``v3``, ``v2compat``) no live node serves.

    Args:
        nodes: Live heartbeats (``live_nodes``), each listing its ``lanes``.
    """
    served = {lane for node in nodes for lane in node.get("lanes", [])}
    return [queue for queue in queues if queue not in served]
