"""``snakepool call``: send one request and print the lane that served it and the result."""

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
from snakepool.tasks.cli._params import SECONDS, command_name, json_object, session_id

__all__ = ["call"]


@click.command()
@click.argument("command", callback=command_name)
@click.argument("args", required=False, default="{}")
@click.option("--session", "session_id", default=None, callback=session_id, help="Session id.")
@click.option("--direct", is_flag=True, help="Zero-hop: decide here, skip the router.")
@click.option(
    "--timeout", type=SECONDS, default=None, help="Seconds to wait for the result (0 < s ≤ 86400)."
)
@fails_cleanly
def call(
    command: str, args: str, session_id: str | None, direct: bool, timeout: float | None
) -> None:
    """Send one request, e.g. `snakepool call calculate '{"expression": "2+3"}'`.

    Nothing is sent when no live node serves the lane it would go to (or the router):
    the command fails at once, naming it.
    """
    from snakepool.config.json_values import check_json
    from snakepool.errors import PoolUnavailable
    from snakepool.tasks.worker.node import live_nodes
    from snakepool.tasks.worker.reachability import possible_lanes, unserved

    parsed = json_object(args, param_hint="ARGS")
    check_json(parsed, "ARGS")  # the request itself first: InvalidArguments before any lookup
    client = make_client(settings_with(), "direct" if direct else "router")
    with reads_stored_data:  # flags and heartbeats: a corrupt one is exit 5, one line
        lanes = possible_lanes(command, parsed, session_id, client.flags.read())
        queues = [*([] if direct else ["router"]), *lanes]
        missing = unserved(queues, live_nodes(client.redis, client.keys))
    if missing:
        raise PoolUnavailable(
            f"no live node serves {', '.join(missing)}, where this request would go: "
            f"nothing was sent (start one: `snakepool worker --lane {missing[0]}`, or "
            "`snakepool up`; `snakepool status` lists the live nodes)",
            lanes=missing,
        )
    result = client.submit(command, parsed, session_id=session_id)
    value = result.get(timeout=timeout or client.settings.result_timeout)
    console.print_json(json.dumps({"lane": result.queue, "result": value}))
