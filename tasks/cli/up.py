"""``snakepool up``: the compose topology as local processes; Ctrl-C stops everything."""

from __future__ import annotations

import datetime
import threading
import time
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from snakepool.config.secrets import redact_url
from snakepool.tasks.cli._common import console, fails_cleanly, settings_with, styled
from snakepool.tasks.cli._params import setting_range

if TYPE_CHECKING:
    from snakepool.tasks.local.launcher import Launcher

__all__ = ["DEFAULT_METRICS_BASE", "NODE_RESTARTS", "NODE_RESTART_PERIOD", "up"]

#: The router's Prometheus port under ``snakepool up``; the nodes after it count up.
DEFAULT_METRICS_BASE = 9808
#: A node that exits is started again, unless it exited this many times within
#: ``NODE_RESTART_PERIOD`` seconds: then ``up`` stops everything, naming it.
NODE_RESTARTS, NODE_RESTART_PERIOD = 3, 60.0


@click.command()
@click.option(
    "--v3", "v3_nodes", type=click.IntRange(0, 64), default=1, show_default=True,
    help="V3 worker nodes.",
)  # fmt: skip
@click.option(
    "--v2compat", "v2_nodes", type=click.IntRange(0, 64), default=1, show_default=True,
    help="V2-compat nodes.",
)  # fmt: skip
@click.option(
    "--pool-size", type=setting_range("pool_size"), default=None, help="Interpreters per node."
)
@click.option(
    "--flower-port", type=click.IntRange(0, 65535), default=5555, show_default=True,
    help="0: no Flower.",
)  # fmt: skip
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_METRICS_BASE,
    show_default=True,
    help="Prometheus /metrics of the first node; the others count up from it (0: none).",
)
@click.option("--verbose", is_flag=True, help="Every node's full log (banner, one line per task).")
@fails_cleanly
def up(  # noqa: PLR0917 - click passes every option
    v3_nodes: int,
    v2_nodes: int,
    pool_size: int | None,
    flower_port: int,
    metrics_port: int,
    verbose: bool,
) -> None:
    """Run the local stack as processes (what compose.yaml runs as containers).

    A router, V3 and V2-compat nodes and Flower; a throwaway redis-server too when none
    answers at a local REDIS_URL. It says which Redis it uses, whether it started one,
    and the rollout state it found there. Each node serves Prometheus metrics on its own
    port (the router on --metrics-port, each next node on the next port), on
    METRICS_ADDRESS (127.0.0.1 unless set: this host only). The nodes'
    combined log shows node events, client errors (one line each), warnings and errors;
    --verbose shows everything. A node that exits is started again under its name (as
    compose does), unless it exits 3 times within a minute. Ctrl-C stops everything;
    nothing is left behind.
    """
    import signal

    from snakepool.config.flags import FlagStore
    from snakepool.config.keys import Keys
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.local.launcher import Launcher, child_env, stop_grace_for

    settings = settings_with(pool_size=pool_size)
    clash = port_clash(
        metrics_port=metrics_port,
        nodes=1 + v3_nodes + v2_nodes,
        flower_port=flower_port,
        redis_url=settings.redis_url,
    )
    if clash is not None:
        raise click.UsageError(clash)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # The nodes read the same settings: SIGKILL only after their SHUTDOWN_GRACE.
    with Launcher(child_env(), stop_grace=stop_grace_for(settings.shutdown_grace)) as launcher:
        _use_redis(settings.redis_url, launcher)
        client = redis_from_url(settings.redis_url)
        flags = FlagStore(client, prefix=settings.key_prefix).read()
        console.print(_found(flags.to_dict()))
        nodes = [("router", "router")]
        nodes += [("v3", f"v3-{i + 1}") for i in range(v3_nodes)]
        nodes += [("v2compat", f"v2compat-{i + 1}") for i in range(v2_nodes)]
        for number, (lane, name) in enumerate(nodes):
            port = metrics_port + number if metrics_port else 0  # 0: off, whatever the setting
            launcher.start_node(
                lane, name, pool_size=pool_size, metrics_port=port, quiet=not verbose
            )
        if flower_port:
            launcher.start_flower(settings.broker_url or settings.redis_url, flower_port)
        with console.status("starting nodes"):
            launcher.wait_nodes(client, Keys(settings.key_prefix))
        table = Table(title="snakepool up")
        for column in ("process", "pid", "role", "metrics"):
            table.add_column(column)
        for managed in launcher.processes:
            scrape = managed.metrics_port
            where = f"http://{_scrape_host(settings.metrics_address)}:{scrape}/metrics"
            where = where if scrape else "-"
            table.add_row(managed.name, str(managed.process.pid), managed.role, where)
        console.print(table)
        if flower_port:
            console.print(f"Flower: http://127.0.0.1:{flower_port}/")
        console.print("Ctrl-C stops everything")
        _watch(launcher, stop)
        console.print("stopping…")


def _watch(launcher: Launcher, stop: threading.Event) -> None:
    """Until Ctrl-C/SIGTERM (woken at once), or a process up cannot bring back: a node
    that exits is started again under its name (compose's ``restart: unless-stopped``),
    unless it exited ``NODE_RESTARTS`` times within ``NODE_RESTART_PERIOD`` seconds (a
    node that cannot stay up); Redis or Flower exiting ends it too."""
    restarts: dict[str, list[float]] = {}
    while not stop.wait(0.5):  # look at the children twice a second
        for managed in [m for m in launcher.processes if m.process.poll() is not None]:
            now = time.monotonic()
            recent = [t for t in restarts.get(managed.name, []) if now - t < NODE_RESTART_PERIOD]
            how = managed.exit_description()
            if managed.role != "node" or len(recent) >= NODE_RESTARTS:
                why = f"{len(recent)} restarts in {NODE_RESTART_PERIOD:g} s" if recent else how
                console.print(
                    styled("exited:", "red"), f"{managed.name} ({why}); stopping the rest"
                )
                return
            restarts[managed.name] = [*recent, now]
            launcher.restart(managed)
            console.print(styled("exited:", "red"), f"{managed.name} ({how}); started again")


def port_clash(*, metrics_port: int, nodes: int, flower_port: int, redis_url: str) -> str | None:
    """What two of up's processes would both listen on, or None (checked before any starts).

    The nodes' metrics take ``metrics_port`` and the ``nodes - 1`` ports after it; Flower
    takes ``flower_port``; a local Redis its URL's port (0: that process has no port).
    """
    from urllib.parse import urlsplit

    taken: dict[int, str] = {}
    try:
        url = urlsplit(redis_url)
        if url.hostname in ("localhost", "127.0.0.1", "::1"):
            taken[url.port or 6379] = f"REDIS_URL's port {url.port or 6379}"
    except ValueError:
        pass  # a URL the settings refused already
    if flower_port:
        if flower_port in taken:
            return f"--flower-port {flower_port} is {taken[flower_port]}"
        taken[flower_port] = f"--flower-port {flower_port}"
    if not metrics_port:
        return None
    last = metrics_port + nodes - 1
    if last > 65535:
        return (
            f"--metrics-port {metrics_port} with {nodes} processes needs ports up to {last}, "
            "past 65535: choose a lower --metrics-port"
        )
    for port in range(metrics_port, last + 1):
        if port in taken:
            return (
                f"--metrics-port {metrics_port} gives its {nodes} processes ports "
                f"{metrics_port}-{last}, and {port} is {taken[port]}: choose ports apart"
            )
    return None


def _use_redis(redis_url: str, launcher: Launcher) -> None:
    """Use the Redis at ``redis_url``, or start one when nothing listens on its local port;
    say which.

    Raises:
        click.ClickException: no Redis answers at a remote URL, or the local port is taken
            by something snakepool cannot use (named, with what it answered).
    """
    from urllib.parse import unquote, urlsplit

    from snakepool.sessions import redis_answers
    from snakepool.tasks.local.port_probe import what_answers

    shown_url = redact_url(redis_url)
    if redis_answers(redis_url):
        console.print(f"Redis: {shown_url} already answers: using it (not started by up)")
        return
    url = urlsplit(redis_url)
    host, port = url.hostname or "", url.port or 6379
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise click.ClickException(f"no Redis answers at {shown_url}")
    found = what_answers(host, port)
    if found is not None:  # the port is taken: a redis-server could not bind it
        if found.startswith("a Redis"):
            found += f" ({_refusal(redis_url)})"
        raise click.ClickException(
            f"port {port} of {host} (REDIS_URL {shown_url}) is taken by {found}; snakepool "
            "cannot use it and up cannot start a Redis there: free the port, or set "
            "SNAKEPOOL_REDIS_URL to a Redis it can use"
        )
    # The URL's credentials, percent-decoded as redis-py reads them: the Redis up starts
    # asks for the password every process of the stack will send.
    password = unquote(url.password) if url.password else None
    username = unquote(url.username) if url.username else None
    launcher.start_redis(port, username=username, password=password)
    console.print(
        f"Redis: none answered at {shown_url}: started redis-server on port {port} "
        f"({'password required, ' if password else ''}no persistence: its data goes when "
        "up stops)"
    )


def _refusal(url: str) -> str:
    """Why the Redis at ``url`` cannot be used with it, in one line (no secrets: the
    client's own error, which never quotes the password)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return f"with REDIS_URL: {type(exc).__name__}: {str(exc)[:120]}"
    return "it answers now"


def _scrape_host(address: str) -> str:
    """Where this host reaches a node listening on ``address`` (``METRICS_ADDRESS``)."""
    if address in ("0.0.0.0", "::"):  # noqa: S104 - every interface: loopback is one
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def _found(flags: dict[str, Any]) -> str:
    """What ``up`` says about the rollout state it found in Redis."""
    from snakepool.tasks.rollout.report import describe_rollout

    if not flags["version"]:
        return "rollout state: none yet (0% to V3, version 0)"
    when = datetime.datetime.fromtimestamp(flags["updated_at"]).isoformat(timespec="seconds")
    return (
        f"rollout state found: {describe_rollout(flags)}, last changed {when} by "
        f"{flags['updated_by']} ({flags['reason']!r}); `snakepool rollout history` shows "
        "more, `snakepool rollout set 0 --reason …` starts over"
    )
