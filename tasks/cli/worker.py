"""``snakepool worker``: one Celery worker node (``-P threads``) serving a lane, or all."""

from __future__ import annotations

import os
import sys

import click

from snakepool.tasks.cli._common import fails_cleanly, settings_with
from snakepool.tasks.cli._params import LOG_LEVELS, node_name, setting_range

__all__ = ["LANE_CHOICES", "worker"]

#: What a node may serve: one lane, the router, or everything (development).
LANE_CHOICES = ("v3", "v2compat", "router", "all")


@click.command()
@click.option("--lane", type=click.Choice(LANE_CHOICES), required=True, help="What to serve.")
@click.option(
    "--name",
    default=None,
    callback=node_name,
    help="Node name: 1-64 of A-Z a-z 0-9 _ . : - (default: <lane>-<pid>); @host is added "
    "unless given (name@host).",
)
@click.option(
    "--pool-size",
    type=setting_range("pool_size"),
    default=None,
    help="Interpreters (default: POOL_SIZE).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Celery threads (default: pool size, +4 with --lane all; 8 for the router).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus /metrics on this port (0: off) [METRICS_PORT].",
)
@click.option(
    "--loglevel", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO",
    show_default=True,
)  # fmt: skip
@click.option(
    "--quiet",
    is_flag=True,
    help="No banner, no per-task INFO lines: node events, client errors, warnings, errors.",
)
@fails_cleanly
def worker(
    lane: str,
    name: str | None,
    pool_size: int | None,
    concurrency: int | None,
    metrics_port: int | None,
    *,
    loglevel: str,
    quiet: bool,
) -> None:
    """Run a Celery worker node (-P threads) serving one lane, or all of them."""
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.bootstep import install
    from snakepool.tasks.worker.logs import (
        label_log_lines,
        one_line_retries,
        one_line_start_failures,
        per_task_lines_at_debug,
        quiet_task_logs,
    )

    settings = settings_with(pool_size=pool_size, metrics_port=metrics_port)
    lanes = ("router", "v3", "v2compat") if lane == "all" else (lane,)
    app = create_app(settings, node=True)
    install(app, lanes)
    import snakepool.tasks.worker.inventory
    import snakepool.tasks.worker.lanes
    import snakepool.tasks.worker.router  # noqa: F401 - registers the tasks (and control command)

    app.set_current()
    per_task_lines_at_debug(loglevel)
    if concurrency is None:
        # A lane thread waits on its interpreter: one thread per interpreter, plus a few
        # for the quick router tasks when this node also routes.
        extra = 4 if lane == "all" else 0
        concurrency = settings.pool_size + extra if lane != "router" else 8
    given = name or f"{lane}-{os.getpid()}"
    hostname = given if "@" in given else f"{given}@%h"
    label_log_lines(given)
    if loglevel.upper() != "DEBUG":  # at DEBUG, Celery's traceback as it is
        one_line_start_failures()
        one_line_retries()
    if quiet:
        quiet_task_logs(name or lane)
    # Celery's own command, not app.worker_main: that drops the exit code (click returns
    # it when not standalone), so a node whose start failed — an adapter that cannot
    # load, a metrics port in use — exited 0.
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app  # what app.start does: --app is this app
    code = celery_command.main(standalone_mode=False, args=[
        *(["--quiet"] if quiet else []),  # celery's own -q: no banner
        "worker", "-P", "threads", "-c", str(concurrency), "-Q", ",".join(lanes),
        "-n", hostname, "-E", "--without-mingle", "--without-gossip", "-l", loglevel,
    ])  # fmt: skip
    if code:
        sys.exit(code)
