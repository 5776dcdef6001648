"""``snakepool bench``: the running system through the router vs zero-hop, same run."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from snakepool.tasks.cli._common import console, fails_cleanly, make_client, settings_with
from snakepool.tasks.cli._params import COUNT, command_name, json_object

__all__ = ["bench"]


@click.command()
@click.option(
    "-n", "requests", type=COUNT, default=300, show_default=True,
    help="Requests per routing.",
)  # fmt: skip
@click.option("--command", "command", default="ping", show_default=True, callback=command_name)
@click.option("--args", "args_json", default="{}", help="Arguments as JSON.")
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
    help="Requests in flight.",
)  # fmt: skip
@fails_cleanly
def bench(requests: int, command: str, args_json: str, concurrency: int) -> None:
    """Measure the running system: through the router vs zero-hop, same run."""
    import statistics
    import time
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    args = json_object(args_json, param_hint="--args")
    settings = settings_with()
    table = Table(title=f"{requests} x {command} per routing, {concurrency} in flight")
    for column in ("routing", "p50 ms", "p90 ms", "p99 ms", "req/s", "lanes"):
        table.add_column(column, justify="right")
    medians = {}
    with Progress(console=console, transient=True) as progress:
        for routing in ("router", "direct"):
            client = make_client(settings, routing)
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
