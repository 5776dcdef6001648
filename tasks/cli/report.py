"""``snakepool report``: the migration's figures — lanes, traffic share, shadow,
rollbacks, interpreter memory per node and the rollout's state."""

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
    table,
)
from snakepool.tasks.cli._params import MAX_COUNT

__all__ = ["report"]


def _rate(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def _mib(value: int | None) -> str:
    return MISSING if value is None else f"{value / 2**20:.1f}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--rollbacks", "shown", type=click.IntRange(0, MAX_COUNT), default=10, show_default=True,
    help="Newest N rollbacks.",
)  # fmt: skip
@fails_cleanly
@reads_stored_data
def report(as_json: bool, shown: int) -> None:
    """The migration's figures: per lane requests, success rate and p50/p99, the share
    of traffic each lane got, shadow comparisons, rollbacks (when, who, why), interpreter
    memory per node and the rollout's state."""
    from snakepool.config.keys import Keys
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.rollout.report import build_report
    from snakepool.tasks.worker.node import live_nodes

    settings = settings_with()
    client = redis_from_url(settings.redis_url)
    data = build_report(
        client, prefix=settings.key_prefix, nodes=live_nodes(client, Keys(settings.key_prefix))
    )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print(data, shown)


def _print(data: dict[str, Any], shown: int) -> None:
    lanes = table("lanes", "lane", "requests", "share", "success", "errors", "client errs",
                   "p50 ms", "p99 ms")  # fmt: skip
    for lane, f in data["lanes"].items():
        lanes.add_row(
            lane, cell(f["requests"]), _rate(data["traffic"]["share"][lane]),
            _rate(f["success_rate"]), cell(f["errors"]), cell(f["client_errors"]),
            cell(f["p50_ms"]), cell(f["p99_ms"]),
        )  # fmt: skip
    console.print(lanes)
    copies = sum(f["shadow_copies"] for f in data["lanes"].values())
    if copies:
        console.print(f"(requests include {copies} shadow copies; the share counts routed ones)")
    shadow = data["shadow"]
    console.print(
        f"shadow: {shadow['compared']} compared, {shadow['matched']} matched, "
        f"{shadow['mismatched']} mismatched (match rate {_rate(shadow['match_rate'])})"
    )
    rollbacks = data["rollbacks"][-shown:] if shown > 0 else []
    listed = table(
        f"rollbacks ({len(data['rollbacks'])} in all)", "when", "who", "why", "%",
        wrap=("when", "who", "why"),
    )  # fmt: skip
    for entry in rollbacks:
        change = f"{entry['from_percent']} → {entry['to_percent']}"
        if entry["kind"] != "rollback":
            change += f" ({entry['kind']})"
        listed.add_row(entry["when"], entry["who"], entry["why"], change)
    console.print(listed)
    nodes = table("nodes", "node", "lanes", "version", "interpreters", "RSS MiB", "max MiB",
                  wrap=("node",))  # fmt: skip
    for node in data["nodes"]:
        nodes.add_row(
            node["name"], "\n".join(node["lanes"]), cell(node["version"]),
            cell(node["interpreters"]), _mib(node["rss_bytes"]), _mib(node["max_rss_bytes"]),
        )  # fmt: skip
    console.print(nodes)
    console.print(f"rollout: {data['rollout']['summary']}")
