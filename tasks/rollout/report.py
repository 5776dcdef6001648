"""The migration's figures, as ``snakepool report`` shows them.

Read from what the system already keeps — the lanes' counters and latency samples
(:class:`~snakepool.tasks.rollout.metrics.LaneMetrics`), the shadow comparison counts,
the audit stream of flag changes, and the nodes' heartbeats — so a report changes
nothing and needs no node to answer.

- **lanes**: per lane, every request it ran (``requests``; shadow copies included, they
  are real work there, and counted apart as ``shadow_copies``), server ``errors`` and
  ``client_errors``; ``success_rate`` = requests that ended without any error /
  requests; p50/p99 of the latest latency samples (ms).
- **traffic**: the share of the *routed* traffic (requests minus shadow copies) each
  lane got.
- **shadow**: comparisons made, matched, mismatched and the match rate.
- **rollbacks**: every audit entry that lowered the percentage or forced V2-compat,
  with when, who and why.
- **nodes**: each live node's snakepool version and interpreters' resident memory.
- **rollout**: the flags, and a one-line description.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import LANES
from snakepool.config.limits import AUDIT_MAXLEN
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import ShadowRecorder

__all__ = ["build_report", "describe_rollout", "lane_figures", "rollbacks"]


def describe_rollout(flags: dict[str, Any]) -> str:
    """One line for the rollout state, e.g. ``50% to V3 (version 7, paused)``."""
    if flags.get("finalized"):
        return f"finalized: everything goes to V3 (version {flags['version']})"
    notes = [f"version {flags['version']}"]
    if flags.get("paused"):
        notes.append("paused")
    if flags.get("forced_lane"):
        notes.append(f"forced to {flags['forced_lane']}")
    if flags.get("excluded_commands"):
        notes.append("kept on V2-compat: " + ", ".join(flags["excluded_commands"]))
    if flags.get("v3_commands") is not None:
        notes.append("only on V3: " + (", ".join(flags["v3_commands"]) or "nothing"))
    if flags.get("overrides"):
        notes.append(f"{len(flags['overrides'])} session override(s)")
    return f"{flags['percent']}% to V3 ({', '.join(notes)})"


def lane_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """One lane's report figures from its :meth:`LaneMetrics.summary`."""
    requests = summary["requests"]
    errors, client_errors = summary["errors"], summary["client_errors"]
    ok = requests - errors - client_errors
    return {
        "requests": requests,
        "routed": requests - summary.get("shadow_copies", 0),
        "shadow_copies": summary.get("shadow_copies", 0),
        "ok": ok,
        "errors": errors,
        "client_errors": client_errors,
        "success_rate": ok / requests if requests else None,
        "error_rate": errors / requests if requests else None,
        "error_types": summary.get("error_types", {}),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
    }


def rollbacks(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit entries that moved traffic back toward V2-compat, oldest first.

    A rollback (``rollout rollback``, the controller), a lower percentage, or forcing
    every request to V2-compat (the kill switch).
    """
    found = []
    for entry in sorted(history, key=lambda e: e["version"]):
        old, new = entry["old"], entry["new"]
        forced = new.get("forced_lane") == "v2compat" and old.get("forced_lane") != "v2compat"
        lowered = new.get("percent", 0) < old.get("percent", 0)
        if not (lowered or forced or entry["details"].get("action") == "rollback"):
            continue
        found.append({
            "version": entry["version"],
            "at": entry["at"],
            "when": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry["at"])),
            "who": entry["who"],
            "why": entry["why"],
            "from_percent": old.get("percent"),
            "to_percent": new.get("percent"),
            "kind": "kill switch" if forced else "rollback",
        })  # fmt: skip
    return found


def build_report(
    client: redis.Redis, *, prefix: str, nodes: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Everything ``snakepool report`` shows, as JSON-able data.

    Args:
        client: The Redis of the flags and metrics.
        prefix: ``KEY_PREFIX``.
        nodes: The live nodes' heartbeats (``live_nodes``).
    """
    metrics = LaneMetrics(client, prefix=prefix)
    lanes = {lane: lane_figures(metrics.summary(lane)) for lane in LANES}
    routed = sum(figures["routed"] for figures in lanes.values())
    shadow: dict[str, Any] = dict(ShadowRecorder(client, prefix=prefix).counts())
    shadow["match_rate"] = shadow["matched"] / shadow["compared"] if shadow["compared"] else None
    flags = FlagStore(client, prefix=prefix)
    state = flags.read().to_dict()
    return {
        "generated_at": time.time(),
        "lanes": lanes,
        "traffic": {
            "routed": routed,
            "share": {
                lane: (f["routed"] / routed if routed else None) for lane, f in lanes.items()
            },
        },
        "shadow": shadow,
        "rollbacks": rollbacks(flags.history(AUDIT_MAXLEN)),
        "nodes": [_node_figures(node) for node in nodes],
        "rollout": {**state, "summary": describe_rollout(state)},
    }


def _node_figures(node: dict[str, Any]) -> dict[str, Any]:
    # A router has no pool (no interpreters); a node of an older version reports no
    # memory (unknown: None).
    memory = node.get("memory") or {}
    default = 0 if node.get("pool") is None else None
    return {
        "name": node["name"],
        "lanes": node.get("lanes", []),
        "version": node.get("version"),
        **{k: memory.get(k, default) for k in ("interpreters", "rss_bytes", "max_rss_bytes")},
    }
