"""``snakepool demo``: start a pool, push a mix of work through it, show what happened.

It deliberately kills one interpreter with SIGKILL halfway through, so the summary also
shows the pool noticing, replacing it and carrying on.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from snakepool.config import Settings
from snakepool.errors import SnakepoolError
from snakepool.pool import Pool

__all__ = ["run_pool_demo"]

#: (command, args) mix sent by the demo; the last two are rejected on purpose.
_MIX: list[tuple[str, dict[str, Any]]] = [
    ("calculate", {"expression": "(17 + 25) * 3 - 2 ** 5"}),
    ("calculate", {"expression": "sqrt(2) * pi"}),
    ("echo", {"message": "hello", "items": [1, 2, 3]}),
    ("ping", {}),
    ("sleep", {"seconds": 0.005}),
    ("get_stats", {}),
    ("calculate", {"expression": "9**9**9"}),  # refused safely: InvalidArguments
    ("no_such_command", {}),  # UnknownCommand
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def run_pool_demo(settings: Settings, *, requests: int, console: Console) -> int:
    """Run the pool demo; returns the process exit code."""
    # The console reads no markup (snakepool.tasks.cli._common.console): styles as Text.
    console.rule(Text.assemble(("snakepool demo", "bold"), " — the interpreter pool"))
    pool = Pool.from_settings(settings)
    started = time.perf_counter()
    with console.status(f"starting {settings.pool_size} interpreters ({settings.adapter})"):
        pool.start()
    console.print(
        Text.assemble(
            f"{settings.pool_size} interpreters ready in ",
            (f"{time.perf_counter() - started:.3f}s", "bold"),
            f" (start method {settings.start_method}); pids {pool.interpreter_pids()}",
        )
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    lock = threading.Lock()
    rng = random.Random(7)  # noqa: S311 - a reproducible demo mix, not security
    plan = [rng.choice(_MIX) for _ in range(requests)]
    victim: list[int] = []

    def one(index: int) -> None:
        command, args = plan[index]
        if index == requests // 2 and not victim:
            victim.append(pool.interpreter_pids()[0])
            os.kill(victim[0], signal.SIGKILL)  # show crash recovery
        t0 = time.perf_counter()
        try:
            pool.execute(command, args)
            outcome = "ok"
        except SnakepoolError as exc:
            outcome = type(exc).__name__
        with lock:
            latencies[command].append(time.perf_counter() - t0)
            outcomes[command][outcome] += 1

    columns = (TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    t_run = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("requests", total=requests)
        with ThreadPoolExecutor(max_workers=settings.pool_size * 4) as executor:
            for _ in executor.map(one, range(requests)):
                progress.advance(task)
    elapsed = time.perf_counter() - t_run

    table = Table(title=f"{requests} requests in {elapsed:.2f}s ({requests / elapsed:.0f}/s)")
    for column in ("command", "sent", "ok", "errors", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("command", "errors") else "right")
    for command in sorted(latencies):
        counts = outcomes[command]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "ok") or "-"
        table.add_row(
            command,
            str(sum(counts.values())),
            str(counts["ok"]),
            errors,
            f"{_percentile(latencies[command], 0.5) * 1000:.2f}",
            f"{_percentile(latencies[command], 0.99) * 1000:.2f}",
        )
    console.print(table)

    stats = pool.stats()
    summary = Table(title="pool.stats()")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for key in ("size", "live", "idle", "busy", "queued", "requests", "errors", "crashes",
                "restarts", "timeouts", "recycled", "p50_ms", "p99_ms"):  # fmt: skip
        summary.add_row(key, str(stats[key]))
    console.print(summary)
    if victim:
        console.print(
            f"killed interpreter pid {victim[0]} with SIGKILL mid-run: "
            f"{stats['crashes']} crash(es) seen, {stats['restarts']} replacement(s) started; "
            f"now serving from pids {stats['pids']}"
        )
    pool.stop()
    console.print("pool stopped; no interpreter left behind")
    return 0
