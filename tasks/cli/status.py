"""``snakepool status``: nodes and their pools, queues, lanes, rollout and shadow counts."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from snakepool.tasks.cli._common import console, fails_cleanly, settings_with

__all__ = ["status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@fails_cleanly
def status(as_json: bool) -> None:
    """Nodes and their pools, queue depths, per-lane counts and latency, rollout state."""
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.worker.status import collect_status

    settings = settings_with()
    client = redis_from_url(settings.redis_url)
    broker_url = settings.broker_url or settings.redis_url
    broker = redis_from_url(broker_url) if broker_url.startswith("redis") else None
    data = collect_status(client, broker, settings.key_prefix)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _print_nodes(data)
    _print_lanes(data)
    rollout = data["rollout"]
    console.print(
        f"rollout: [bold]{rollout['percent']}%[/] to V3 (version {rollout['version']}"
        f"{', paused' if rollout['paused'] else ''}"
        f"{', forced ' + rollout['forced_lane'] if rollout['forced_lane'] else ''})"
        f"; router queue {data['queues'].get('router')}"
    )
    for lane, why in data.get("shedding", {}).items():
        console.print(f"[red]lane {lane}[/] {why}")
    shadow = data["shadow"]
    console.print(
        f"shadow {'on' if rollout['shadow'] else 'off'}: {shadow['compared']} compared, "
        f"{shadow['matched']} matched, {shadow['mismatched']} mismatched"
    )


def _print_nodes(data: dict[str, Any]) -> None:
    nodes = Table(title="nodes")
    for column in ("node", "lanes", "size", "idle", "busy", "queued", "requests", "errors",
                   "restarts", "p50 ms", "p99 ms", "flags v", "shedding"):  # fmt: skip
        nodes.add_column(column)
    for node in data["nodes"]:
        pool = node.get("pool") or {}
        figures = [str(pool.get(k, "-")) for k in (
            "size", "idle", "busy", "queued", "requests", "errors", "restarts", "p50_ms", "p99_ms"
        )]  # fmt: skip
        diverted = node.get("shedding") or dict.fromkeys(node.get("open_breakers") or [], "")
        shedding = ",".join(f"{lane} ({why})" if why else lane for lane, why in diverted.items())
        shedding = (shedding or "-") + (" [stopping]" if node.get("stopping") else "")
        nodes.add_row(node["name"], ",".join(node["lanes"]), *figures,
                      str(node.get("flags_version", "-")), shedding)  # fmt: skip
        if pool.get("unavailable"):
            console.print(f"[red]{node['name']} pool unavailable:[/] {pool['unavailable']}")
    console.print(nodes)


def _print_lanes(data: dict[str, Any]) -> None:
    lanes = Table(title="lanes")
    for column in ("lane", "nodes", "queued", "requests", "errors", "client errors", "p50", "p95",
                   "p99"):  # fmt: skip
        lanes.add_column(column)
    for lane, figures in data["lanes"].items():
        lanes.add_row(lane, str(figures.get("live_nodes", "-")), str(data["queues"].get(lane)),
                      *(str(figures[k]) for k in (
            "requests", "errors", "client_errors", "p50_ms", "p95_ms", "p99_ms")))  # fmt: skip
    console.print(lanes)
