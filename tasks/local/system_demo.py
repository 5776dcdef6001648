"""The system part of ``snakepool demo``: sessions, programs and a rollout, end to end.

Against Redis when one answers at ``REDIS_URL`` (it starts a router, a V3 and a
V2-compat node as processes, and stops them afterwards); otherwise fully embedded:
kombu's in-memory broker, fakeredis, and one in-process worker serving every queue.
Either way it creates sessions with DSPy programs, sends traffic through the router
while stepping the rollout 0 → 10 → 50 → 100 %, and prints what each lane served,
latency percentiles and the audit trail.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from snakepool.config import Settings
from snakepool.config.flags import RolloutFlags
from snakepool.config.secrets import redact_url
from snakepool.sessions import redis_answers
from snakepool.tasks.client import Client

__all__ = ["STEPS", "run_system_demo"]

#: The rollout the demo walks through, in percent to V3.
STEPS = (0, 10, 50, 100)
#: Audit entries the report reads at most (a run makes len(STEPS), a few more at worst).
_AUDIT_ROWS = 50
#: Redis database the demo uses on a real server, so it never touches a deployment's
#: queues (their names are fixed) or rollout flags.
DEMO_DB = 15
DEMO_PREFIX = "snakepool-demo:"
_ANSWERS = Path(__file__).with_name("demo_answers.json")
_QUESTIONS = [
    "What is the capital of France?",
    "How many legs has a spider?",
    "Why is the sky blue?",
]


def _adapter() -> str:
    try:
        import dspy  # noqa: F401 - the demo runs DSPy programs when the extra is there
    except ImportError:
        return "snakepool.pool.interpreter.builtin"
    return "snakepool.pool.interpreter.dspy_programs"


def _demo_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@contextlib.contextmanager
def _redis_stack(settings: Settings, console: Console) -> Iterator[Client]:
    from snakepool.tasks.local.launcher import Launcher, child_env, stop_grace_for

    url = _demo_url(settings.redis_url, DEMO_DB)
    settings = settings.model_copy(
        update={"redis_url": url, "broker_url": url, "key_prefix": DEMO_PREFIX}
    )
    console.print(
        f"(the demo keeps to database {DEMO_DB}: its keys under {DEMO_PREFIX}*, Celery's "
        "queues and results there too, each result deleted once read)"
    )
    overrides = {"adapter": _adapter(), "pool_size": "2", "lm_answers": str(_ANSWERS),
                 "redis_url": url, "broker_url": url, "key_prefix": DEMO_PREFIX}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="snakepool-demo-") as logdir,
        Launcher(
            child_env(**overrides),
            logdir=Path(logdir),
            stop_grace=stop_grace_for(settings.shutdown_grace),
        ) as launcher,
    ):
        for lane in ("router", "v3", "v2compat"):
            launcher.start_node(lane, f"demo-{lane}-{os.getpid()}")
        client = Client(settings=settings)
        with console.status("starting a router, a V3 and a V2-compat node"):
            launcher.wait_nodes(client.redis, client.keys)
        try:
            client.flags.update(lambda _: RolloutFlags(), who="demo", why="demo start")
            _forget_figures(client)
            yield client
        finally:
            client.close()


def _forget_figures(client: Client) -> None:
    """Drop the figures of earlier demo runs (its own prefix only): this run's table
    reports this run."""
    prefix = client.settings.key_prefix
    for pattern in ("metrics:*", "latencies:*", "latency:*", "window:*", "shadow:*"):
        stale = list(client.redis.scan_iter(match=f"{prefix}{pattern}", count=500))
        if stale:
            client.redis.delete(*stale)


def _served(client: Client, command: str, args: dict[str, Any], sid: str) -> tuple[Any, str]:
    """Run one request; its result and lane. Its stored result is deleted once read, so
    the demo leaves no ``celery-task-meta-*`` keys behind."""
    result = client.submit(command, args, session_id=sid)
    try:
        value = result.get(timeout=60, interval=0.01)
        return value, str(result.queue)
    finally:
        result.forget()


@contextlib.contextmanager
def _embedded_stack(settings: Settings, console: Console) -> Iterator[Client]:
    from celery.contrib.testing.worker import start_worker

    import snakepool.tasks.worker.lanes
    import snakepool.tasks.worker.router  # noqa: F401 - registers the tasks
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.bootstep import install

    embedded = settings.model_copy(update={
        "redis_url": "fakeredis://demo", "broker_url": "fakeredis://demo",
        "adapter": _adapter(), "pool_size": 2, "lm_answers": str(_ANSWERS),
    })  # fmt: skip
    app = create_app(embedded, node=True)
    install(app, ("router", "v3", "v2compat"))
    with console.status("starting an in-process worker with 2 interpreters"):
        worker = start_worker(
            app, pool="threads", concurrency=8, perform_ping_check=False,
            queues=["router", "v3", "v2compat"], loglevel="WARNING", shutdown_timeout=30,
        )  # fmt: skip
        worker.__enter__()
    client = Client(settings=embedded)
    client.app = app  # the same in-memory broker and result store as the worker
    try:
        yield client
    finally:
        client.close()
        worker.__exit__(None, None, None)


def _drive(client: Client, console: Console, sessions: int) -> None:
    """Send the demo's traffic through every step of :data:`STEPS`."""
    program = {"signature": "question -> answer", "module": "chain_of_thought"}
    dspy = _adapter().endswith("dspy_programs")
    ids = [client.create_session(metadata={"demo": True}) for _ in range(sessions)]
    served: dict[int, Counter[str]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        if dspy:
            task = progress.add_task("creating programs", total=len(ids))
            for sid in ids:
                _served(client, "create_program", {"id": "qa", **program}, sid)
                progress.advance(task)
        for percent in STEPS:
            flags = client.set_rollout(percent, f"demo step to {percent}%")
            client.wait_for_flags(flags["version"])
            step = progress.add_task(f"traffic at {percent:>3}% to V3", total=len(ids) * 3)

            def one(i: int, sid: str, step: Any = step) -> str:
                if dspy:
                    question = _QUESTIONS[i % len(_QUESTIONS)]
                    args = {"program_id": "qa", "inputs": {"question": question}}
                    _, lane = _served(client, "execute_program", args, sid)
                else:
                    _, lane = _served(client, "calculate", {"expression": f"{i} * 2"}, sid)
                progress.advance(step)
                return lane

            with ThreadPoolExecutor(max_workers=8) as executor:
                lanes = list(executor.map(one, range(len(ids) * 3), ids * 3))
            served[percent] = Counter(lanes)
    table = Table(title=f"{sessions} sessions, 3 requests each per step")
    for column in ("rollout", "V3", "V2-compat"):
        table.add_column(column, justify="right")
    for percent, counts in served.items():
        table.add_row(f"{percent}%", str(counts["v3"]), str(counts["v2compat"]))
    console.print(table)
    if dspy:
        sid = ids[0]
        answer, _ = _served(
            client,
            "execute_program",
            {"program_id": "qa", "inputs": {"question": _QUESTIONS[0]}},
            sid,
        )
        console.print(f"a DSPy program created on V2-compat, answered on V3: {answer}")


def _report(client: Client, console: Console, since_version: int) -> None:
    from snakepool.tasks.worker.status import collect_status

    status = collect_status(client.redis, None, client.settings.key_prefix)
    lanes = Table(title="per lane (this run)")
    for column in ("lane", "requests", "errors", "client errors", "p50 ms", "p95 ms", "p99 ms"):
        lanes.add_column(column, justify="right")
    for lane, figures in status["lanes"].items():
        lanes.add_row(lane, *(str(figures[k]) for k in (
            "requests", "errors", "client_errors", "p50_ms", "p95_ms", "p99_ms")))  # fmt: skip
    console.print(lanes)
    audit = Table(title="audit trail (rollout history)")
    for column in ("version", "when"):
        audit.add_column(column, no_wrap=True)
    # ``who`` is user@host: a container's host name alone can be 64 characters. It gives
    # way (folded) so that ``why`` and ``percent`` always read whole.
    audit.add_column("who", overflow="fold", max_width=24)
    audit.add_column("why", overflow="fold", min_width=20)
    audit.add_column("percent", no_wrap=True)
    # Every change this run made (its steps, and whatever the controller or a lane's
    # liveness added meanwhile), oldest first; never an earlier run's.
    entries = [e for e in client.flags.history(_AUDIT_ROWS) if e["version"] > since_version]
    for entry in reversed(entries):
        when = datetime.datetime.fromtimestamp(entry["at"]).strftime("%H:%M:%S")
        change = f"{entry['old']['percent']} → {entry['new']['percent']}"
        audit.add_row(str(entry["version"]), when, entry["who"], entry["why"], change)
    console.print(audit)


def run_system_demo(settings: Settings, *, console: Console, sessions: int = 40) -> int:
    """Run the rollout demo; returns the exit code."""
    console.rule(Text.assemble(("snakepool demo", "bold"), " — lanes, router and a rollout"))
    if redis_answers(settings.redis_url):
        console.print(
            f"Redis answers at {redact_url(settings.redis_url)}: using it, with real worker nodes"
        )
        stack: Any = _redis_stack(settings, console)
    else:
        console.print(
            f"no Redis answers at {redact_url(settings.redis_url)}: running embedded "
            "(in-memory broker, fakeredis, in-process worker)"
        )
        stack = _embedded_stack(settings, console)
    with stack as client:
        since_version = client.flags.read().version
        _drive(client, console, sessions)
        _report(client, console, since_version)
    console.print("done: every node and interpreter stopped")
    return 0
