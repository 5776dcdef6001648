"""``snakepool call``: send one request and print the lane that served it and the result."""

from __future__ import annotations

import json

import click

from snakepool.tasks.cli._common import console, fails_cleanly, make_client, settings_with

__all__ = ["call"]


@click.command()
@click.argument("command")
@click.argument("args", required=False, default="{}")
@click.option("--session", "session_id", default=None, help="Session id.")
@click.option("--direct", is_flag=True, help="Zero-hop: decide here, skip the router.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the result.")
@fails_cleanly
def call(
    command: str, args: str, session_id: str | None, direct: bool, timeout: float | None
) -> None:
    """Send one request, e.g. `snakepool call calculate '{"expression": "2+3"}'`."""
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"ARGS must be a JSON object: {exc}") from None
    client = make_client(settings_with(), "direct" if direct else "router")
    result = client.submit(command, parsed, session_id=session_id)
    value = result.get(timeout=timeout or client.settings.result_timeout)
    console.print_json(json.dumps({"lane": result.queue, "result": value}))
