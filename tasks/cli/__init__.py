"""The ``snakepool`` command line: run nodes, send requests, watch and steer the rollout."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from snakepool.config import Settings, load_settings
from snakepool.errors import SnakepoolError

__all__ = ["main"]

console = Console()
LANE_CHOICES = ("v3", "v2compat", "router", "all")


def _fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a snakepool error as one line and exit 2, instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis
        from celery.exceptions import TimeoutError as ResultTimeout
        from kombu.exceptions import OperationalError

        try:
            return fn(*args, **kwargs)
        except SnakepoolError as exc:
            console.print(f"[red]{type(exc).__name__}:[/] {exc.message}")
            sys.exit(2)
        except (redis.ConnectionError, OperationalError) as exc:
            console.print(f"[red]cannot reach Redis / the broker:[/] {exc}")
            sys.exit(3)
        except ResultTimeout:
            console.print("[red]no result in time:[/] are worker nodes running? (snakepool status)")
            sys.exit(4)

    return wrapper


def _settings(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _client(settings: Settings, routing: str = "router") -> Any:
    from snakepool.tasks.client import Client

    return Client(settings=settings, routing=routing)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """snakepool: warm Python interpreter pools behind a task queue."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--requests", "-n", default=400, show_default=True, help="Requests to send.")
@click.option("--pool-size", type=int, default=None, help="Interpreters (default: POOL_SIZE).")
@_fails_cleanly
def demo(requests: int, pool_size: int | None) -> None:
    """The pool under load (and one crash), then sessions, programs and a rollout through
    the lanes: against Redis at REDIS_URL when it answers, else fully embedded."""
    from snakepool.tasks.local.pool_demo import run_pool_demo
    from snakepool.tasks.local.system_demo import run_system_demo

    settings = _settings(pool_size=pool_size)
    code = run_pool_demo(settings, requests=requests, console=console)
    code = code or run_system_demo(settings, console=console)
    sys.exit(code)


@main.command()
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
@_fails_cleanly
def worker(
    lane: str, name: str | None, pool_size: int | None, concurrency: int | None, loglevel: str
) -> None:
    """Run a Celery worker node (-P threads) serving one lane, or all of them."""
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.bootstep import install

    settings = _settings(pool_size=pool_size)
    lanes = ("router", "v3", "v2compat") if lane == "all" else (lane,)
    app = create_app(settings)
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


@main.command()
@click.option("--v3", "v3_nodes", default=1, show_default=True, help="V3 worker nodes.")
@click.option("--v2compat", "v2_nodes", default=1, show_default=True, help="V2-compat nodes.")
@click.option("--pool-size", type=int, default=None, help="Interpreters per node.")
@click.option("--flower-port", default=5555, show_default=True, help="0: no Flower.")
@_fails_cleanly
def up(v3_nodes: int, v2_nodes: int, pool_size: int | None, flower_port: int) -> None:
    """Run the local stack as processes (what compose.yaml runs as containers).

    A router, V3 and V2-compat nodes and Flower; a throwaway redis-server too when none
    answers at a local REDIS_URL. Ctrl-C stops everything; nothing is left behind.
    """
    import signal
    import threading
    from urllib.parse import urlsplit

    from snakepool.sessions import redis_answers, redis_from_url
    from snakepool.tasks.local.launcher import Launcher, child_env

    settings = _settings(pool_size=pool_size)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Launcher(child_env()) as launcher:
        if not redis_answers(settings.redis_url):
            url = urlsplit(settings.redis_url)
            if url.hostname not in ("localhost", "127.0.0.1", "::1"):
                raise click.ClickException(f"no Redis answers at {settings.redis_url}")
            console.print(
                f"no Redis at {settings.redis_url}: starting redis-server (no persistence)"
            )
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
            from snakepool.config.keys import Keys

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


@main.command()
@click.argument("command")
@click.argument("args", required=False, default="{}")
@click.option("--session", "session_id", default=None, help="Session id.")
@click.option("--direct", is_flag=True, help="Zero-hop: decide here, skip the router.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the result.")
@_fails_cleanly
def call(
    command: str, args: str, session_id: str | None, direct: bool, timeout: float | None
) -> None:
    """Send one request, e.g. `snakepool call calculate '{"expression": "2+3"}'`."""
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"ARGS must be a JSON object: {exc}") from None
    client = _client(_settings(), "direct" if direct else "router")
    result = client.submit(command, parsed, session_id=session_id)
    value = result.get(timeout=timeout or client.settings.result_timeout)
    console.print_json(json.dumps({"lane": result.queue, "result": value}))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fails_cleanly
def status(as_json: bool) -> None:
    """Nodes and their pools, queue depths, per-lane counts and latency, rollout state."""
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.worker.status import collect_status

    settings = _settings()
    client = redis_from_url(settings.redis_url)
    broker_url = settings.broker_url or settings.redis_url
    broker = redis_from_url(broker_url) if broker_url.startswith("redis") else None
    data = collect_status(client, broker, settings.key_prefix)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    nodes = Table(title="nodes")
    for column in ("node", "lanes", "size", "idle", "busy", "queued", "requests", "errors",
                   "restarts", "p50 ms", "p99 ms", "flags v", "shedding"):  # fmt: skip
        nodes.add_column(column)
    for node in data["nodes"]:
        pool = node.get("pool") or {}
        figures = [str(pool.get(k, "-")) for k in (
            "size", "idle", "busy", "queued", "requests", "errors", "restarts", "p50_ms", "p99_ms"
        )]  # fmt: skip
        shedding = ",".join(node.get("open_breakers") or []) or "-"
        nodes.add_row(node["name"], ",".join(node["lanes"]), *figures,
                      str(node.get("flags_version", "-")), shedding)  # fmt: skip
        if pool.get("unavailable"):
            console.print(f"[red]{node['name']} pool unavailable:[/] {pool['unavailable']}")
    console.print(nodes)
    lanes = Table(title="lanes")
    for column in ("lane", "queued", "requests", "errors", "client errors", "p50", "p95", "p99"):
        lanes.add_column(column)
    for lane, figures in data["lanes"].items():
        lanes.add_row(lane, str(data["queues"].get(lane)), *(str(figures[k]) for k in (
            "requests", "errors", "client_errors", "p50_ms", "p95_ms", "p99_ms")))  # fmt: skip
    console.print(lanes)
    rollout = data["rollout"]
    console.print(
        f"rollout: [bold]{rollout['percent']}%[/] to V3 (version {rollout['version']}"
        f"{', paused' if rollout['paused'] else ''}"
        f"{', forced ' + rollout['forced_lane'] if rollout['forced_lane'] else ''})"
        f"; router queue {data['queues'].get('router')}"
    )
    shadow = data["shadow"]
    console.print(
        f"shadow {'on' if rollout['shadow'] else 'off'}: {shadow['compared']} compared, "
        f"{shadow['matched']} matched, {shadow['mismatched']} mismatched"
    )


@main.group()
def rollout() -> None:
    """Move traffic between V2-compat and V3."""


@rollout.command("set")
@click.argument("percent", type=click.IntRange(0, 100))
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_set(percent: int, reason: str) -> None:
    """Send PERCENT % of sessions to V3."""
    flags = _client(_settings()).set_rollout(percent, reason)
    console.print(f"rollout {flags['percent']}% to V3 (version {flags['version']})")


@rollout.command("rollback")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_rollback(reason: str) -> None:
    """Send all traffic back to V2-compat now (and pause promotion)."""
    flags = _client(_settings()).rollback(reason)
    console.print(f"rolled back: {flags['percent']}% to V3 (version {flags['version']})")


@rollout.command("history")
@click.option("-n", "count", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_fails_cleanly
def rollout_history(count: int, as_json: bool) -> None:
    """The audit trail: who changed what, when and why."""
    history = _client(_settings()).flags.history(count)
    if as_json:
        click.echo(json.dumps(history, indent=2))
        return
    table = Table(title="rollout history")
    for column in ("version", "when", "who", "why", "percent"):
        table.add_column(column)
    import datetime

    for entry in history:
        when = datetime.datetime.fromtimestamp(entry["at"]).isoformat(timespec="seconds")
        change = f"{entry['old']['percent']} → {entry['new']['percent']}"
        table.add_row(str(entry["version"]), when, entry["who"], entry["why"], change)
    console.print(table)


@rollout.command("force")
@click.argument("lane", type=click.Choice(["v3", "v2compat", "off"]))
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_force(lane: str, reason: str) -> None:
    """Kill switch: send every request to LANE regardless of percentages (off: undo)."""
    from dataclasses import replace

    from snakepool.tasks.client import operator_name

    forced = None if lane == "off" else lane
    flags = _client(_settings()).flags.update(
        lambda f: replace(f, forced_lane=forced), who=operator_name(), why=reason
    )
    console.print(f"forced lane: {flags.forced_lane or 'none'} (version {flags.version})")


@rollout.command("override")
@click.argument("session_id")
@click.argument("lane", type=click.Choice(["v3", "v2compat", "clear"]))
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_override(session_id: str, lane: str, reason: str) -> None:
    """Pin one session to LANE whatever its bucket says (clear: back to its bucket)."""
    from dataclasses import replace

    from snakepool.config.keys import validate_session_id
    from snakepool.tasks.client import operator_name

    validate_session_id(session_id)

    def change(flags: Any) -> Any:
        overrides = {k: v for k, v in flags.overrides.items() if k != session_id}
        if lane != "clear":
            overrides[session_id] = lane
        return replace(flags, overrides=overrides)

    flags = _client(_settings()).flags.update(change, who=operator_name(), why=reason)
    console.print(f"{len(flags.overrides)} session override(s) (version {flags.version})")


@rollout.command("step")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_step(reason: str) -> None:
    """Promote to the next step of the schedule (1, 5, 10, 25, 50, 100 by default)."""
    from snakepool.tasks.client import operator_name

    flags = _client(_settings()).flags.step(who=operator_name(), why=reason)
    console.print(f"rollout {flags.percent}% to V3 (version {flags.version})")


def _set_paused(paused: bool, reason: str) -> None:
    from snakepool.tasks.client import operator_name

    flags = _client(_settings()).flags.set_paused(paused, who=operator_name(), why=reason)
    state = "paused" if paused else "resumed"
    console.print(f"{state} at {flags.percent}% (version {flags.version})")


@rollout.command("pause")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_pause(reason: str) -> None:
    """Stop automatic promotion (the controller still rolls back)."""
    _set_paused(True, reason)


@rollout.command("resume")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@_fails_cleanly
def rollout_resume(reason: str) -> None:
    """Let the controller promote again."""
    _set_paused(False, reason)


@main.command()
@click.argument("state", type=click.Choice(["on", "off", "show"]))
@click.option(
    "--rate", type=click.FloatRange(0, 1), default=None, help="Share of read-only requests."
)
@click.option("--mismatches", "show", default=0, help="Also print the newest N mismatches.")
@_fails_cleanly
def shadow(state: str, rate: float | None, show: int) -> None:
    """Run a copy of read-only requests on the other lane and compare the results.

    `shadow show` changes nothing: it prints the counts (and mismatches with --mismatches).
    """
    client = _client(_settings())
    flags = client.rollout_state() if state == "show" else client.set_shadow(state == "on", rate)
    enabled = "on" if flags["shadow"] else "off"
    counts = client.shadows.counts()
    console.print(f"shadow {enabled} (rate {flags['shadow_rate']:g}); so far: {counts}")
    for mismatch in client.shadows.mismatches(show):
        console.print_json(json.dumps(mismatch, default=str))


@main.command()
@click.option("--interval", default=10.0, show_default=True, help="Seconds between decisions.")
@click.option("--once", is_flag=True, help="Decide (and act) once, print why, exit.")
@click.option("--bake", "bake_seconds", default=300.0, show_default=True, help="Seconds per step.")
@click.option("--min-samples", default=50, show_default=True, help="V3 requests per window.")
@click.option("--max-error-rate", default=0.05, show_default=True)
@_fails_cleanly
def controller(
    interval: float, once: bool, bake_seconds: float, min_samples: int, max_error_rate: float
) -> None:
    """The rollout controller: promote, hold or roll back from the lanes' metrics."""
    import signal
    import threading

    from snakepool.config.flags import FlagStore
    from snakepool.sessions import redis_from_url
    from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
    from snakepool.tasks.rollout.metrics import LaneMetrics

    settings = _settings()
    client = redis_from_url(settings.redis_url)
    policy = ControllerPolicy(
        bake_seconds=bake_seconds, min_samples=min_samples, max_error_rate=max_error_rate
    )
    rollout_controller = RolloutController(
        FlagStore(client, prefix=settings.key_prefix),
        LaneMetrics(client, prefix=settings.key_prefix),
        policy,
    )
    if once:
        decision = rollout_controller.evaluate()
        rollout_controller.apply(decision)
        console.print(f"{decision.action}: {decision.reason}")
        console.print_json(json.dumps(decision.snapshot))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"controller: deciding every {interval:g}s (Ctrl-C stops)")
    rollout_controller.run(interval=interval, stop=stop)


@main.command()
@click.option("-n", "requests", default=300, show_default=True, help="Requests per routing.")
@click.option("--command", "command", default="ping", show_default=True)
@click.option("--args", "args_json", default="{}", help="Arguments as JSON.")
@click.option("--concurrency", default=4, show_default=True, help="Requests in flight.")
@_fails_cleanly
def bench(requests: int, command: str, args_json: str, concurrency: int) -> None:
    """Measure the running system: through the router vs zero-hop, same run."""
    import statistics
    import time
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    args = json.loads(args_json)
    settings = _settings()
    table = Table(title=f"{requests} x {command} per routing, {concurrency} in flight")
    for column in ("routing", "p50 ms", "p90 ms", "p99 ms", "req/s", "lanes"):
        table.add_column(column, justify="right")
    medians = {}
    with Progress(console=console, transient=True) as progress:
        for routing in ("router", "direct"):
            client = _client(settings, routing)
            task = progress.add_task(routing, total=requests)

            def one(_: int, client: Any = client, task: Any = task) -> tuple[float, str]:
                started = time.perf_counter()
                result = client.submit(command, args)
                result.get(timeout=settings.result_timeout)
                progress.advance(task)
                return time.perf_counter() - started, str(result.queue)

            for warm in range(min(20, requests)):
                one(warm)
            progress.reset(task)
            began = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as executor:
                done = list(executor.map(one, range(requests)))
            elapsed = time.perf_counter() - began
            latencies = sorted(d[0] * 1000 for d in done)
            quantiles = statistics.quantiles(latencies, n=100)
            medians[routing] = statistics.median(latencies)
            served = Counter(lane for _, lane in done)
            lanes = ", ".join(f"{lane} {count}" for lane, count in sorted(served.items()))
            table.add_row(routing, f"{medians[routing]:.2f}", f"{quantiles[89]:.2f}",
                          f"{quantiles[98]:.2f}", f"{requests / elapsed:.0f}", lanes)  # fmt: skip
            client.close()
    console.print(table)
    console.print(f"router / zero-hop median latency: {medians['router'] / medians['direct']:.2f}x")


@main.group()
def sessions() -> None:
    """Inspect and delete sessions."""


@sessions.command("list")
@click.option("-n", "limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_fails_cleanly
def sessions_list(limit: int, as_json: bool) -> None:
    """The newest sessions."""
    found = _client(_settings()).store.list(limit=limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = Table(title="sessions")
    for column in ("id", "programs", "ttl left", "v2 node"):
        table.add_column(column)
    for session in found:
        table.add_row(session["id"], str(session["programs"]), str(session["ttl_left"]),
                      session["v2_node"] or "-")  # fmt: skip
    console.print(table)


@sessions.command("show")
@click.argument("session_id")
@_fails_cleanly
def sessions_show(session_id: str) -> None:
    """One session with its programs."""
    client = _client(_settings())
    session = client.get_session(session_id)
    if session is None:
        console.print(f"no session {session_id!r}")
        sys.exit(1)
    session["programs"] = client.store.programs(session_id)
    console.print_json(json.dumps(session))


@sessions.command("delete")
@click.argument("session_id")
@_fails_cleanly
def sessions_delete(session_id: str) -> None:
    """Delete a session and its programs."""
    deleted = _client(_settings()).delete_session(session_id)
    console.print("deleted" if deleted else f"no session {session_id!r}")
    sys.exit(0 if deleted else 1)


if __name__ == "__main__":
    main()
