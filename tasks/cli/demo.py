"""``snakepool demo``: the pool under load, then sessions, programs and a rollout."""

from __future__ import annotations

import sys

import click

from snakepool.tasks.cli._common import console, fails_cleanly, settings_with
from snakepool.tasks.cli._params import COUNT, setting_range

__all__ = ["demo"]


@click.command()
@click.option(
    "--requests", "-n", type=COUNT, default=400, show_default=True,
    help="Requests to send.",
)  # fmt: skip
@click.option(
    "--pool-size",
    type=setting_range("pool_size"),
    default=None,
    help="Interpreters (default: POOL_SIZE).",
)
@fails_cleanly
def demo(requests: int, pool_size: int | None) -> None:
    """The pool under load (and one crash), then sessions, programs and a rollout through
    the lanes: against Redis at REDIS_URL when it answers, else fully embedded."""
    from snakepool.tasks.local.pool_demo import run_pool_demo
    from snakepool.tasks.local.system_demo import run_system_demo

    settings = settings_with(pool_size=pool_size)
    code = run_pool_demo(settings, requests=requests, console=console)
    code = code or run_system_demo(settings, console=console)
    sys.exit(code)
