"""``snakepool shadow on|off|show``: compare read-only requests on both lanes."""

from __future__ import annotations

import json

import click

from snakepool.tasks.cli._common import (
    console,
    fails_cleanly,
    make_client,
    reads_stored_data,
    settings_with,
)
from snakepool.tasks.cli._params import MAX_COUNT, SHARE

__all__ = ["shadow"]


@click.command()
@click.argument("state", type=click.Choice(["on", "off", "show"]))
@click.option("--rate", type=SHARE, default=None, help="Share of read-only requests.")
@click.option(
    "--mismatches", "show", type=click.IntRange(0, MAX_COUNT), default=0,
    help="Also print the newest N mismatches.",
)  # fmt: skip
@fails_cleanly
@reads_stored_data
def shadow(state: str, rate: float | None, show: int) -> None:
    """Run a copy of read-only requests on the other lane and compare the results.

    `shadow show` changes nothing: it prints the counts (and mismatches with --mismatches).
    """
    client = make_client(settings_with())
    flags = client.rollout_state() if state == "show" else client.set_shadow(state == "on", rate)
    enabled = "on" if flags["shadow"] else "off"
    counts = client.shadows.counts()
    console.print(f"shadow {enabled} (rate {flags['shadow_rate']:g}); so far: {counts}")
    for mismatch in client.shadows.mismatches(show):
        console.print_json(json.dumps(mismatch, default=str))
