"""``snakepool status``: nodes and their pools, queues, lanes, rollout and shadow counts.

Readable at 80 columns: no cell is ever cut short (a long one wraps), and a figure that
does not exist yet (a latency before the first request) prints as an en dash, not None.
"""

from __future__ import annotations

import json
from typing import Any

import click

from snakepool.tasks.cli._common import (
    MISSING,
    cell,
    console,
    fails_cleanly,
    reads_stored_data,
    settings_with,
    styled,
    table,
)

__all__ = ["status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@fails_cleanly
@reads_stored_data
def status(as_json: bool) -> None:
    """Nodes and their pools, queue depths, per-lane counts and latency, rollout state."""
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.rollout.report import describe_rollout
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
    console.print(
        f"rollout: {describe_rollout(data['rollout'])}; "
        f"router queue {cell(data['queues'].get('router'))}"
    )
    for lane, why in data.get("shedding", {}).items():
        console.print(f"[red]lane {lane}[/] {why}")
    shadow = data["shadow"]
    waiting = ", ".join(f"{lane} {cell(n)}" for lane, n in data.get("shadow_queued", {}).items())
    console.print(
        f"shadow {'on' if data['rollout']['shadow'] else 'off'}: {shadow['compared']} compared, "
        f"{shadow['matched']} matched, {shadow['mismatched']} mismatched; copies waiting for "
        f"room: {waiting}; dropped (backlog over the cap): {data.get('shadow_dropped', 0)}; "
        f"expired unrun: {data.get('shadow_expired', 0)}"
    )


def _ms(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.1f}"


def _print_nodes(data: dict[str, Any]) -> None:
    nodes = table("nodes", "node", "lanes", "pool", "queued", "reqs", "errs", "restarts",
                  "p50/p99", "flags", wrap=("node",), caption="pool: idle/busy/size; "
                  "p50/p99: ms; flags: the version it routes by")  # fmt: skip
    for node in data["nodes"]:
        pool = node.get("pool") or {}
        interpreters = "/".join(cell(pool.get(k)) for k in ("idle", "busy", "size"))
        latency = f"{_ms(pool.get('p50_ms'))}/{_ms(pool.get('p99_ms'))}"
        nodes.add_row(
            node["name"], "\n".join(node["lanes"]), interpreters if pool else MISSING,
            *(cell(pool.get(k)) for k in ("queued", "requests", "errors", "restarts")),
            latency if pool else MISSING, cell(node.get("flags_version")),
        )  # fmt: skip
        diverted = node.get("shedding") or {}
        if diverted or node.get("stopping"):
            why = ", ".join(
                f"{lane} ({reason})" if reason else lane for lane, reason in diverted.items()
            )
            console.print(
                styled(f"{node['name']}:", "yellow"),
                (f"sheds {why}" if why else "") + (" [stopping]" if node.get("stopping") else ""),
            )
    console.print(nodes)
    for node in data["nodes"]:
        pool = node.get("pool") or {}
        if pool.get("unavailable"):
            console.print(styled(f"{node['name']} pool unavailable:", "red"), pool["unavailable"])
        if node.get("open_breakers"):
            shed = ", ".join(node["open_breakers"])
            console.print(styled(f"{node['name']} sheds {shed} (circuit breaker open)", "yellow"))


def _print_lanes(data: dict[str, Any]) -> None:
    lanes = table("lanes", "lane", "nodes", "queued", "requests", "errors", "client errs",
                  "p50 ms", "p95 ms", "p99 ms")  # fmt: skip
    for lane, figures in data["lanes"].items():
        lanes.add_row(lane, cell(figures.get("live_nodes")), cell(data["queues"].get(lane)),
                      *(cell(figures[k]) for k in (
            "requests", "errors", "client_errors")), *(_ms(figures[k]) for k in (
            "p50_ms", "p95_ms", "p99_ms")))  # fmt: skip
    console.print(lanes)
