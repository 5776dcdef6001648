"""``snakepool rollout finalize|unfinalize``: end the migration (V3 only), or undo that."""

from __future__ import annotations

import sys

import click

from snakepool.tasks.cli._common import (
    console,
    fails_cleanly,
    make_client,
    settings_with,
    styled,
)
from snakepool.tasks.cli._params import REASON, SECONDS

__all__ = ["rollout_finalize", "rollout_unfinalize"]


@click.command("finalize")
@REASON
@click.option(
    "--timeout",
    type=SECONDS,
    default=30.0,
    show_default=True,
    help="Seconds each V2-compat node has to report the programs its interpreters hold.",
)
@fails_cleanly
def rollout_finalize(reason: str, timeout: float) -> None:
    """End the migration: every request goes to V3; V2-compat nodes may then be stopped.

    Refused, saying why, unless the rollout is at 100 %, not paused, not forced, nothing
    is queued or in flight on V2-compat, and every session's programs are in the store.
    Exit 1 when refused. See docs/runbook-retirement.md.
    """
    from snakepool.errors import ConfigError, InvalidArguments
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.rollout.finalize import finalize
    from snakepool.tasks.worker.retirement import gather_readiness

    settings = settings_with()
    client = make_client(settings)
    broker_url = settings.broker_url or settings.redis_url
    if not broker_url.startswith(("redis://", "rediss://", "unix://", "fakeredis://")):
        raise ConfigError(
            f"finalize reads the v2compat queue in the broker: BROKER_URL must be a Redis "
            f"URL, not {broker_url.split(':', 1)[0]}://",
            setting="BROKER_URL",
        )
    broker = redis_from_url(broker_url)
    with console.status("checking V2-compat: queues, in-flight requests, programs"):
        readiness = gather_readiness(
            client.app, client.redis, broker, client.store, timeout=timeout
        )
    try:
        flags = finalize(client.flags, readiness, who=operator_name(), why=reason)
    except InvalidArguments as exc:
        console.print(styled("cannot finalize the rollout:", "red"))
        for blocker in exc.data.get("blockers") or [exc.message]:
            console.print(f"  - {blocker}")
        sys.exit(1)
    console.print(
        f"finalized (version {flags.version}): every request goes to V3; V2-compat nodes "
        "can be stopped (docs/runbook-retirement.md). "
        "`snakepool rollout unfinalize --reason …` reverts."
    )


@click.command("unfinalize")
@REASON
@fails_cleanly
def rollout_unfinalize(reason: str) -> None:
    """Undo `rollout finalize`: routing follows the percentage and exclusions again.

    Start the V2-compat nodes first if any request should go there again.
    """
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.rollout.finalize import unfinalize

    flags = unfinalize(make_client(settings_with()).flags, who=operator_name(), why=reason)
    console.print(
        f"unfinalized (version {flags.version}): routing follows the flags again "
        f"({flags.percent}% to V3)"
    )
