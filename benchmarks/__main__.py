"""``python -m benchmarks``: run the ratio benchmarks, print a table, write JSON.

Benchmarks (see ``benchmarks/README.md``):

a. ``Pool(size=8).start()`` with a heavy adapter vs one cold interpreter of it.
b. SIGKILL of an idle interpreter → its replacement ready.
c. ``ping`` through ``Pool.execute`` vs a raw msgpack pipe round trip.
d. CPU-bound throughput, 2 interpreters vs 1.
e. Memory of the parent, the template and the interpreters.
f. DSPy: ``Pool(size=8, adapter=dspy_programs).start()`` vs one cold ``import dspy``.
g. DSPy: ``execute_program`` through the pool vs a fresh interpreter per request.
h. DSPy: total USS of the pool's 8 interpreters vs one fresh ``import dspy``'s RSS.
i. Celery: ``ping`` zero-hop and through the router vs a plain Celery task (own Redis).

Targets are informational: the exit status is 0 whatever the figures, 1 if a benchmark
crashed, 130 on Ctrl-C. Every pool is stopped and every child killed in all cases.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.celery_lanes import bench_celery
from benchmarks.dspy_memory import bench_dspy_memory
from benchmarks.dspy_pool import bench_dspy_execute, bench_dspy_start
from benchmarks.harness import Harness
from benchmarks.latency import bench_ping
from benchmarks.memory import bench_memory
from benchmarks.noise import CpuMeter
from benchmarks.report import LogCollector, machine_info, print_table, write_json
from benchmarks.startup import bench_pool_start, bench_replacement
from benchmarks.stats import Figure
from benchmarks.throughput import bench_throughput

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"

Bench = Callable[[Harness], dict[str, Any]]

#: (letter, name, full run, quick run). Memory runs first: its parent-growth figure is
#: only meaningful in a process that has not started a pool yet.
BENCHMARKS: list[tuple[str, str, Bench, Bench]] = [
    ("e", "memory", bench_memory, lambda h: bench_memory(h, rounds=1)),
    ("a", "pool_start", bench_pool_start, lambda h: bench_pool_start(h, rounds=1)),
    ("b", "replacement", bench_replacement, lambda h: bench_replacement(h, kills=5)),
    ("c", "ping", bench_ping, lambda h: bench_ping(h, rounds=2, calls=500)),
    (
        "d",
        "throughput",
        bench_throughput,
        lambda h: bench_throughput(h, rounds=1, seconds=1.0),
    ),
    ("f", "dspy_start", bench_dspy_start, lambda h: bench_dspy_start(h, rounds=1)),
    (
        "g",
        "dspy_execute",
        bench_dspy_execute,
        lambda h: bench_dspy_execute(h, rounds=1, calls=30, warmup=5),
    ),
    ("h", "dspy_memory", bench_dspy_memory, lambda h: bench_dspy_memory(h, rounds=1)),
    (
        "i",
        "celery",
        bench_celery,
        lambda h: bench_celery(
            h, rounds=2, calls=10, warmup=5, shadow_rounds=2, throughput_rounds=1, seconds=1.0
        ),
    ),
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default="abcdefghi",
        help="letters of the benchmarks to run, e.g. 'ac' (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few repetitions: a smoke test, not figures to quote"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON file to write (default: {DEFAULT_OUTPUT})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; returns the exit status."""
    options = _parse(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    collector = LogCollector()
    snakepool_log = logging.getLogger("snakepool")
    snakepool_log.addHandler(collector)
    snakepool_log.propagate = False  # the expected crash warnings of (b) go to the summary
    started = time.monotonic()
    machine_before = machine_info()
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    harness = Harness()
    status = 0
    try:
        for letter, name, full, quick in BENCHMARKS:
            if letter not in options.only:
                continue
            console.print(f"[dim]running ({letter}) {name} …[/]")
            try:
                with CpuMeter() as meter:
                    results[letter] = (quick if options.quick else full)(harness)
                assert meter.noise is not None
                results[letter]["data"]["noise"] = asdict(meter.noise)
                console.print(f"[dim]    ({letter}) {meter.noise.describe()}[/]")
            except Exception as exc:
                failures[letter] = "".join(traceback.format_exception(exc))
                console.print(f"[red]({letter}) {name} crashed:[/] {exc!r}")
                status = 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping pools and children[/]")
        status = 130
    finally:
        harness.close()
    leftovers = harness.leftovers()
    if leftovers:
        console.print(f"[red]processes left behind: {leftovers}[/]")
        status = status or 1
    figures: list[Figure] = [f for letter in sorted(results) for f in results[letter]["figures"]]
    title = "snakepool benchmarks" + (" (--quick: smoke test only)" if options.quick else "")
    if figures:
        print_table(console, figures, title)
    console.print(
        f"processes started and checked: {harness.tracked}, left behind: {len(leftovers)}; "
        f"load average before {machine_before['load_average']}, "
        f"after {machine_info()['load_average']}; {time.monotonic() - started:.0f} s"
    )
    if collector.messages:
        console.print("[dim]pool log (warnings and errors, counted):[/]")
        for message, count in collector.summary().items():
            console.print(f"[dim]  {count:4d} x {message}[/]")
    for letter, text in failures.items():
        console.print(f"[red]({letter}) traceback:[/]\n{text}")
    write_json(
        options.output,
        {
            "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
            "quick": options.quick,
            "machine": machine_before,
            "load_average_after": machine_info()["load_average"],
            "duration_s": round(time.monotonic() - started, 1),
            "figures": {f.key: f for f in figures},
            "data": {letter: results[letter]["data"] for letter in sorted(results)},
            "failures": failures,
            "interrupted": status == 130,
            "processes_started": harness.tracked,
            "processes_left_behind": leftovers,
            "pool_log": collector.summary(),
        },
    )
    console.print(f"[dim]wrote {options.output}[/]")
    return status


if __name__ == "__main__":
    sys.exit(main())
