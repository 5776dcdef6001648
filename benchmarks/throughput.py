"""(d) CPU-bound throughput with 1 and with 2 interpreters, against the machine's ceiling.

Each pool is driven by ``size + 1`` caller threads sending ``spin {"ms": 5}`` back to
back, so an interpreter never waits for a caller. Only requests that completed inside
the timed window count.

A 2-vCPU machine shared with others rarely gives two whole CPUs, so every round also
runs the same work kernel in one bare process and in two at once
(:mod:`benchmarks.cpu_probe`): their 2-vs-1 ratio is what the machine allowed in that
round, and the pool's ratio divided by it is the pool's own scaling efficiency. The
four measurements of a round run back to back, in an order that rotates every round.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from benchmarks.harness import Harness
from benchmarks.noise import CpuMeter
from benchmarks.startup import HEAVY
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.pool import Pool

__all__ = ["bench_throughput"]

#: Seconds between launching bare probes and the start of their common window.
PROBE_LEAD_SECONDS = 0.3
#: A round is "quiet" when neighbours used less than this many CPUs in each of its steps.
QUIET_CPUS = 0.15


def _drive(pool: Pool, threads: int, seconds: float, chunks: int) -> float:
    """Requests/s completed within a window of ``seconds`` by ``threads`` callers."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    finished: list[list[float]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []
    args = {"chunks": chunks}

    def caller(done: list[float]) -> None:
        try:
            start.wait()
            while not stop.is_set():
                pool.execute("spin", args)
                done.append(time.perf_counter())
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    workers = [
        threading.Thread(target=caller, args=(done,), daemon=True, name=f"bench-caller-{i}")
        for i, done in enumerate(finished)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait()
        began = time.perf_counter()
        time.sleep(seconds)
    finally:
        stop.set()
        start.abort()  # harmless once passed; frees the callers if we never got there
        for worker in workers:
            worker.join(30.0)
    if failures:
        raise RuntimeError(f"a caller failed: {failures[0]!r}") from failures[0]
    end = began + seconds
    completed = sum(began <= t <= end for done in finished for t in done)
    return completed / seconds


def _probe(harness: Harness, processes: int, seconds: float) -> float:
    """Work chunks/s of ``processes`` bare probes running the kernel at the same time."""
    start_at = time.time() + PROBE_LEAD_SECONDS
    argv = [sys.executable, "-m", "benchmarks.cpu_probe", repr(start_at), repr(seconds)]
    probes = [harness.popen(argv, capture=True) for _ in range(processes)]
    chunks = 0
    for probe in probes:
        assert probe.stdout is not None
        output = probe.stdout.read()
        probe.stdout.close()
        if harness.reap(probe, timeout=seconds + 30) != 0:
            raise RuntimeError("a CPU probe failed")
        chunks += int(output.split()[0])
    return chunks / seconds


def _pids(harness: Harness, pool: Pool) -> tuple[int, ...]:
    """The template's and the interpreters' pids (alive through a step, not reaped)."""
    template = harness.template_pid(pool)
    return (*([template] if template else []), *pool.interpreter_pids())


def _quiet_figures(rates: dict[str, list[float]], quiet: list[int]) -> list[Figure]:
    """The 2-vs-1 ratio over the rounds no neighbour disturbed (none if there are none)."""
    if not quiet:
        return []
    ratio = ratio_summary([rates["pool2"][i] for i in quiet], [rates["pool1"][i] for i in quiet])
    ceiling = ratio_summary([rates["bare2"][i] for i in quiet], [rates["bare1"][i] for i in quiet])
    return [
        Figure(
            "d.quiet_ratio",
            "    pool 2 / 1, quiet rounds only",
            ratio.median,
            "x",
            ratio.spread("{:.2f}"),
            note=f"median of per-round ratios; ceiling {ceiling.median:.2f}x",
        )
    ]


def _single_ms(pool: Pool, chunks: int, calls: int = 40) -> float:
    """Median wall milliseconds of one ``spin`` request on an otherwise idle pool."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        pool.execute("spin", {"chunks": chunks})
        samples.append((time.perf_counter() - started) * 1000)
    return summarize(samples).median


def bench_throughput(
    harness: Harness, *, rounds: int = 5, seconds: float = 2.0, spin_ms: float = 5.0
) -> dict[str, Any]:
    """Requests/s of 1 and 2 interpreters, and the bare ceiling, per round."""
    one = harness.pool(size=1, adapter=HEAVY)
    two = harness.pool(size=2, adapter=HEAVY)
    rates: dict[str, list[float]] = {"pool1": [], "pool2": [], "bare1": [], "bare2": []}
    load: dict[str, list[float]] = {name: [] for name in rates}  # neighbours' CPUs per step
    try:
        one.start()
        two.start()
        # Each template calibrated spin at its own import; one calibration for both pools.
        chunks: int = max(1, round(spin_ms * one.execute("info")["chunks_per_ms"]))
        steps = {
            "pool1": lambda: _drive(one, 2, seconds, chunks),
            "pool2": lambda: _drive(two, 3, seconds, chunks),
            "bare1": lambda: _probe(harness, 1, seconds),
            "bare2": lambda: _probe(harness, 2, seconds),
        }
        order = list(steps)
        live = {"pool1": _pids(harness, one), "pool2": _pids(harness, two)}
        single_ms = _single_ms(one, chunks)
        _drive(one, 2, seconds / 4, chunks)  # warm-up, not counted
        _drive(two, 3, seconds / 4, chunks)
        for index in range(rounds):
            for name in order[index % 4 :] + order[: index % 4]:
                with CpuMeter(live.get(name, ())) as meter:
                    rates[name].append(steps[name]())
                assert meter.noise is not None
                load[name].append(meter.noise.others_cpus)
    finally:
        harness.stop_pool(two)
        harness.stop_pool(one)
    one_s, two_s = summarize(rates["pool1"]), summarize(rates["pool2"])
    pool_ratio = ratio_summary(rates["pool2"], rates["pool1"])
    bare_ratio = ratio_summary(rates["bare2"], rates["bare1"])
    efficiency = ratio_summary(pool_ratio.samples, bare_ratio.samples)
    headline = two_s.median / one_s.median
    worst = [max(load[name][i] for name in load) for i in range(rounds)]
    quiet = [i for i in range(rounds) if worst[i] < QUIET_CPUS]
    load_s = summarize(worst)
    figures = [
        Figure(
            "d.ratio",
            f"(d) spin {spin_ms:g} ms: req/s 2 / 1 interpreters",
            headline,
            "x",
            f"per round {pool_ratio.spread('{:.2f}')}",
            (">=", 1.8),
            f"ratio of medians; {rounds} rounds of {seconds:g} s",
        ),
        Figure(
            "d.one_rps",
            "    1 interpreter, 2 callers",
            one_s.median,
            " req/s",
            one_s.spread("{:.0f}"),
        ),
        Figure(
            "d.two_rps",
            "    2 interpreters, 3 callers",
            two_s.median,
            " req/s",
            two_s.spread("{:.0f}"),
        ),
        Figure(
            "d.bare_ratio",
            "    machine ceiling: 2 / 1 bare processes",
            bare_ratio.median,
            "x",
            bare_ratio.spread("{:.2f}"),
            note="same kernel, no pool, same rounds",
        ),
        Figure(
            "d.efficiency",
            "    pool ratio / ceiling, per round",
            efficiency.median,
            "",
            efficiency.spread("{:.2f}"),
            note="1.0 = scales as well as bare processes",
        ),
        Figure(
            "d.neighbour_load",
            "    neighbours' load, busiest step of a round",
            load_s.median,
            " CPUs",
            load_s.spread("{:.2f}"),
            note=f"{len(quiet)} of {rounds} rounds under {QUIET_CPUS:g} CPUs in every step",
        ),
        *_quiet_figures(rates, quiet),
        Figure(
            "d.single_ms",
            "    one spin request alone (wall)",
            single_ms,
            " ms",
            "",
            note=f"what {spin_ms:g} ms of spin took here",
        ),
    ]
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "window_s": seconds,
            "spin_ms": spin_ms,
            "spin_chunks": chunks,
            "single_request_ms": single_ms,
            "one_interpreter_rps": one_s.as_dict(),
            "two_interpreters_rps": two_s.as_dict(),
            "per_round_ratio": pool_ratio.as_dict(),
            "bare_chunks_per_s_one": summarize(rates["bare1"]).as_dict(),
            "bare_chunks_per_s_two": summarize(rates["bare2"]).as_dict(),
            "bare_ratio": bare_ratio.as_dict(),
            "efficiency": efficiency.as_dict(),
            "neighbour_cpus_per_step": load,
            "quiet_rounds": quiet,
        },
    }
