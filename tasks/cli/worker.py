"""``snakepool worker``: one Celery worker node (``-P threads``) serving a lane, or all."""

from __future__ import annotations

import os

import click

from snakepool.tasks.cli._common import fails_cleanly, settings_with

__all__ = ["LANE_CHOICES", "worker"]

#: What a node may serve: one lane, the router, or everything (development).
LANE_CHOICES = ("v3", "v2compat", "router", "all")


@click.command()
@click.option("--lane", type=click.Choice(LANE_CHOICES), required=True, help="What to serve.")
@click.option("--name", default=None, help="Node name (default: <lane>-<pid>); @host is added.")
@click.option("--pool-size", type=int, default=None, help="Interpreters (default: POOL_SIZE).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Celery threads (default: pool size, +4 with --lane all; 8 for the router).",
)
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def worker(
    lane: str, name: str | None, pool_size: int | None, concurrency: int | None, loglevel: str
) -> None:
    """Run a Celery worker node (-P threads) serving one lane, or all of them."""
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.bootstep import install

    settings = settings_with(pool_size=pool_size)
    lanes = ("router", "v3", "v2compat") if lane == "all" else (lane,)
    app = create_app(settings, node=True)
    install(app, lanes)
    import snakepool.tasks.worker.lanes
    import snakepool.tasks.worker.router  # noqa: F401 - registers the tasks on the app

    app.set_current()
    if concurrency is None:
        # A lane thread waits on its interpreter: one thread per interpreter, plus a few
        # for the quick router tasks when this node also routes.
        extra = 4 if lane == "all" else 0
        concurrency = settings.pool_size + extra if lane != "router" else 8
    hostname = f"{name or f'{lane}-{os.getpid()}'}@%h"
    app.worker_main([
        "worker", "-P", "threads", "-c", str(concurrency), "-Q", ",".join(lanes),
        "-n", hostname, "-E", "--without-mingle", "--without-gossip", "-l", loglevel,
    ])  # fmt: skip
