"""``snakepool up``: the compose topology as local processes; Ctrl-C stops everything."""

from __future__ import annotations

import click
from rich.table import Table

from snakepool.config.secrets import redact_url
from snakepool.tasks.cli._common import console, fails_cleanly, settings_with

__all__ = ["up"]


@click.command()
@click.option("--v3", "v3_nodes", default=1, show_default=True, help="V3 worker nodes.")
@click.option("--v2compat", "v2_nodes", default=1, show_default=True, help="V2-compat nodes.")
@click.option("--pool-size", type=int, default=None, help="Interpreters per node.")
@click.option("--flower-port", default=5555, show_default=True, help="0: no Flower.")
@fails_cleanly
def up(v3_nodes: int, v2_nodes: int, pool_size: int | None, flower_port: int) -> None:
    """Run the local stack as processes (what compose.yaml runs as containers).

    A router, V3 and V2-compat nodes and Flower; a throwaway redis-server too when none
    answers at a local REDIS_URL. Ctrl-C stops everything; nothing is left behind.
    """
    import signal
    import threading
    from urllib.parse import urlsplit

    from snakepool.config.keys import Keys
    from snakepool.sessions import redis_answers, redis_from_url
    from snakepool.tasks.local.launcher import Launcher, child_env, stop_grace_for

    settings = settings_with(pool_size=pool_size)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # The nodes read the same settings: SIGKILL only after their SHUTDOWN_GRACE.
    with Launcher(child_env(), stop_grace=stop_grace_for(settings.shutdown_grace)) as launcher:
        if not redis_answers(settings.redis_url):
            url = urlsplit(settings.redis_url)
            if url.hostname not in ("localhost", "127.0.0.1", "::1"):
                raise click.ClickException(f"no Redis answers at {redact_url(settings.redis_url)}")
            shown = redact_url(settings.redis_url)
            console.print(f"no Redis at {shown}: starting redis-server (no persistence)")
            launcher.start_redis(url.port or 6379)
        launcher.start_node("router", "router", pool_size=pool_size)
        for i in range(v3_nodes):
            launcher.start_node("v3", f"v3-{i + 1}", pool_size=pool_size)
        for i in range(v2_nodes):
            launcher.start_node("v2compat", f"v2compat-{i + 1}", pool_size=pool_size)
        if flower_port:
            launcher.start_flower(settings.broker_url or settings.redis_url, flower_port)
        client = redis_from_url(settings.redis_url)
        with console.status("starting nodes"):
            launcher.wait_nodes(client, Keys(settings.key_prefix))
        table = Table(title="snakepool up")
        for column in ("process", "pid", "role"):
            table.add_column(column)
        for managed in launcher.processes:
            table.add_row(managed.name, str(managed.process.pid), managed.role)
        console.print(table)
        if flower_port:
            console.print(f"Flower: http://127.0.0.1:{flower_port}/")
        console.print("Ctrl-C stops everything")
        # Wake on Ctrl-C/SIGTERM at once; look at the children twice a second.
        while not stop.wait(0.5):
            exited = [m.name for m in launcher.processes if m.process.poll() is not None]
            if exited:
                console.print(f"[red]exited:[/] {', '.join(exited)}; stopping the rest")
                break
        console.print("stopping…")
