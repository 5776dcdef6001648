"""(c) ``ping`` through ``Pool.execute`` vs a raw msgpack pipe round trip.

The raw side is the floor any pool over pipes can reach in Python: one write, one read,
msgpack each way, to a persistent child (:mod:`benchmarks.raw_echo`). The pool adds
leasing, deadlines (non-blocking pipes + ``poll``), the wire dataclasses, the command
table, counters and the observer hook. Both run in interleaved rounds, alternating
which goes first, so a noisy second of the machine hits both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import psutil

from benchmarks.harness import Harness, read_frame
from benchmarks.noise import run_seconds
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.pool.interpreter import wire

__all__ = ["RawEcho", "bench_ping"]

#: Deadline for one raw reply (only a hung child would ever hit it).
RAW_TIMEOUT = 10.0


class RawEcho:
    """A persistent :mod:`benchmarks.raw_echo` child and its two pipes."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        script = str(Path(__file__).with_name("raw_echo.py"))
        try:
            self.process = harness.popen(
                [sys.executable, script, str(req_r), str(resp_w)], pass_fds=(req_r, resp_w)
            )
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._buffer = bytearray()
        self._next_id = 0

    def ping(self) -> Any:
        """One round trip; returns the reply's value."""
        self._next_id += 1
        rid = self._next_id
        os.write(self.req_w, wire.frame(msgpack.packb((0, rid, "ping", {}), use_bin_type=True)))
        payload = read_frame(self.resp_r, self._buffer, time.monotonic() + RAW_TIMEOUT)
        kind, reply_id, ok, value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if kind != 1 or reply_id != rid or not ok:
            raise RuntimeError(f"raw echo: unexpected reply {value!r}")
        return value

    def close(self) -> None:
        """EOF on its request pipe (it exits 0), then reap it."""
        if self.req_w >= 0:
            os.close(self.req_w)
            self.req_w = -1
        self.harness.reap(self.process)
        if self.resp_r >= 0:
            os.close(self.resp_r)
            self.resp_r = -1


class _Tally:
    """What one side of the comparison measured under one CPU placement."""

    def __init__(self) -> None:
        self.us_per_call: list[float] = []
        self.calls = 0
        self.caller_cpu = 0.0
        self.child_cpu = 0.0

    def run(self, call: Callable[[], Any], child: psutil.Process, calls: int) -> None:
        """``calls`` round trips: wall time per call, and CPU time on both ends."""
        child_before = run_seconds(child.pid)
        cpu_before = time.thread_time()
        started = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - started
        self.us_per_call.append(elapsed / calls * 1e6)
        self.caller_cpu += time.thread_time() - cpu_before
        self.child_cpu += run_seconds(child.pid) - child_before
        self.calls += calls

    def cpu_us(self) -> dict[str, float]:
        """CPU microseconds per call of the calling thread and of the child."""
        calls = max(self.calls, 1)
        return {
            "caller": self.caller_cpu / calls * 1e6,
            "child": self.child_cpu / calls * 1e6,
        }


def _placements() -> list[tuple[str, str, tuple[int, int] | None]]:
    """(key, label, (caller CPU, child CPU) or None for unpinned)."""
    cpus = sorted(os.sched_getaffinity(0))
    placements: list[tuple[str, str, tuple[int, int] | None]] = [
        ("unpinned", "unpinned (scheduler's choice)", None),  # first: nothing pinned yet
        ("same_cpu", "caller and child pinned to one CPU", (cpus[0], cpus[0])),
    ]
    if len(cpus) > 1:
        placements.append(("cross_cpu", "pinned to two different CPUs", (cpus[0], cpus[1])))
    return placements


def _round(
    harness: Harness,
    placement: tuple[int, int] | None,
    calls: int,
    first: str,
    tallies: dict[str, _Tally],
) -> None:
    """One round with a fresh pool (size 1) and a fresh raw child, pinned as asked."""
    everything = os.sched_getaffinity(0)
    pool = harness.pool(size=1, adapter="snakepool.pool.interpreter.builtin")
    raw: RawEcho | None = None
    try:
        pool.start()
        raw = RawEcho(harness)
        if pool.execute("ping").get("pong") is not True or raw.ping().get("pong") is not True:
            raise RuntimeError("ping did not pong")
        ends: dict[str, tuple[Callable[[], Any], psutil.Process]] = {
            "pool": (lambda: pool.execute("ping"), psutil.Process(pool.interpreter_pids()[0])),
            "raw": (raw.ping, psutil.Process(raw.process.pid)),
        }
        if placement is not None:
            os.sched_setaffinity(0, {placement[0]})  # this thread only: the caller
            for _, child in ends.values():
                os.sched_setaffinity(child.pid, {placement[1]})
        for call, _ in ends.values():  # warm-up, not counted
            for _ in range(calls // 4):
                call()
        for name in (first, "raw" if first == "pool" else "pool"):
            call, child = ends[name]
            tallies[name].run(call, child, calls)
    finally:
        os.sched_setaffinity(0, everything)
        if raw is not None:
            raw.close()
        harness.stop_pool(pool)


def bench_ping(harness: Harness, *, rounds: int = 10, calls: int = 2000) -> dict[str, Any]:
    """Per-call microseconds of each side, per round, for each CPU placement.

    Where the two processes run dominates a pipe round trip on a VM: a wake-up across
    CPUs costs tens of microseconds, far more than either side's Python. So the caller
    thread and the child (the pool's interpreter, the raw echo child) are pinned alike:
    to one CPU (the round trip is then mostly the CPU work of both sides, which is what
    the pool adds to), and to two CPUs; the unpinned run is shown for information.

    Every round starts a fresh pool and a fresh raw child: a pair of processes keeps
    whatever scheduling pattern it fell into for its whole life (we saw the raw round
    trip settle at 8.5 or at 14 us, pinned alike, from one process to the next), so
    only new processes per round make the spread show it.
    """
    by_key: dict[str, list[Figure]] = {}
    data: dict[str, Any] = {"rounds": rounds, "calls_per_round": calls}
    for key, label, placement in _placements():
        tallies = {"pool": _Tally(), "raw": _Tally()}
        for index in range(rounds):
            _round(harness, placement, calls, "pool" if index % 2 == 0 else "raw", tallies)
        by_key[key] = _figures(key, label, tallies, headline=key == "same_cpu")
        pooled, bare = tallies["pool"].us_per_call, tallies["raw"].us_per_call
        data[key] = {
            "caller_cpu_child_cpu": placement,
            "pool_us_per_call": summarize(pooled).as_dict(),
            "raw_us_per_call": summarize(bare).as_dict(),
            "per_round_ratio": ratio_summary(pooled, bare).as_dict(),
            "cpu_us_per_call": {name: tally.cpu_us() for name, tally in tallies.items()},
        }
    figures = [f for key in ("same_cpu", "cross_cpu", "unpinned") for f in by_key.get(key, [])]
    figures[0].note += f"; {rounds} rounds x {calls} calls per side, fresh processes each"
    return {"figures": figures, "data": data}


def _figures(key: str, label: str, sides: dict[str, _Tally], *, headline: bool) -> list[Figure]:
    pool_s, raw_s = summarize(sides["pool"].us_per_call), summarize(sides["raw"].us_per_call)
    per_round = ratio_summary(pool_s.samples, raw_s.samples)
    pinned = key != "unpinned"
    title = "(c) ping: Pool.execute / raw pipe" if headline else "    ping ratio"
    pool_cpu, raw_cpu = sides["pool"].cpu_us(), sides["raw"].cpu_us()
    return [
        Figure(
            f"c.{key}.ratio",
            f"{title}, {label}",
            pool_s.median / raw_s.median,
            "x",
            f"per round {per_round.spread('{:.2f}')}",
            ("<=", 1.5),
            "ratio of medians" if pinned else "ratio of medians; bimodal, see README",
        ),
        Figure(
            f"c.{key}.pool_us",
            "      Pool.execute('ping') per call",
            pool_s.median,
            " us",
            pool_s.spread("{:.1f}"),
            note=f"CPU/call: caller {pool_cpu['caller']:.1f} us, "
            f"interpreter {pool_cpu['child']:.1f} us",
        ),
        Figure(
            f"c.{key}.raw_us",
            "      raw msgpack round trip per call",
            raw_s.median,
            " us",
            raw_s.spread("{:.1f}"),
            note=f"CPU/call: caller {raw_cpu['caller']:.1f} us, child {raw_cpu['child']:.1f} us",
        ),
    ]
