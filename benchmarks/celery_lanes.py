"""(i) ``ping`` through Celery: zero-hop to the V3 lane and through the router, against a
plain Celery task on the same broker.

Three ways to get ``{"pong": True, …}`` back, all ``submit → AsyncResult.get()`` from
this process against one private redis-server (:class:`~benchmarks.celery_stack.CeleryStack`):

- ``plain``: ``bench.plain.ping.delay()`` on a plain Celery worker (-P threads -c 4)
  with snakepool's Celery settings (:mod:`benchmarks.plain_app`): Celery's own floor;
- ``direct``: ``Client(routing="direct").submit("ping")``: the client decides the lane
  (rollout at 100 %: V3) and enqueues ``snakepool.v3.execute`` on ``v3``, zero hops;
  the node runs it through its pool (2 interpreters) and records the lane's metrics;
- ``router``: ``Client(routing="router")``: ``snakepool.route`` on ``router`` decides on
  the node and forwards with ``Task.replace`` to the same V3 task.

Latency: one request in flight, rounds of ``calls`` per side, the order rotating every
round. Throughput: ``in_flight`` threads submitting back to back for a fixed window per
side, same rotation; only requests completed inside the window count. During those
windows the CPU time of this process (the clients), of the worker serving the side (the
node with its interpreters, or the plain worker) and of redis-server is read, so that
the figures say where each request's CPU goes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from benchmarks.celery_stack import CeleryStack
from benchmarks.harness import Harness
from benchmarks.plain_app import PLAIN_TASK, create_plain_app
from benchmarks.stats import Figure, ratio_summary, summarize
from snakepool.tasks.client import Client
from snakepool.tasks.rollout.metrics import LaneMetrics

__all__ = ["bench_celery"]

SIDES = ("plain", "direct", "router")
#: Seconds to wait for one result (only a stuck stack would reach it).
RESULT_TIMEOUT = 30.0
#: Zero-hop ping over plain Celery above this is flagged (no target, but worth a look).
FLAG_ABOVE = 1.5

Call = Callable[[], str]  # one request, start to result; returns the queue that ran it


def _caller(submit: Callable[[], Any]) -> Call:
    def call() -> str:
        result = submit()
        value = result.get(timeout=RESULT_TIMEOUT)
        if not isinstance(value, dict) or value.get("pong") is not True:
            raise RuntimeError(f"ping answered {value!r}")
        return str(result.queue)

    return call


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Drivers:
    """``size`` daemon threads that keep one request each in flight until a deadline.

    The same threads serve every window: Celery's result backend is per thread, so new
    threads per window would time their connection set-up too. Daemon threads, so that
    a Ctrl-C never waits for a request in flight.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: queue.Queue[tuple[Call, float] | None] = queue.Queue()
        self._done: queue.Queue[tuple[int, list[float], BaseException | None]] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"bench-driver-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, deadline = job
            completed, latencies, error = 0, [], None
            try:
                while (started := time.perf_counter()) < deadline:
                    call()
                    finished = time.perf_counter()
                    if finished <= deadline:
                        completed += 1
                        latencies.append(finished - started)
            except BaseException as exc:  # reported to the caller, not lost in a thread
                error = exc
            self._done.put((completed, latencies, error))

    def run(self, call: Call, seconds: float) -> tuple[float, list[float]]:
        """Requests per second over a window of ``seconds``, and their latencies."""
        deadline = time.perf_counter() + seconds
        for _ in range(self.size):
            self._jobs.put((call, deadline))
        completed, latencies = 0, []
        for _ in range(self.size):
            count, samples, error = self._done.get(timeout=seconds + 2 * RESULT_TIMEOUT)
            if error is not None:
                raise RuntimeError(f"a driver thread failed: {error!r}") from error
            completed += count
            latencies += samples
        return completed / seconds, latencies

    def close(self) -> None:
        """Let the threads end after their current window."""
        for _ in self._threads:
            self._jobs.put(None)


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU of these processes, all their threads (clock-tick resolution)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _latency_rounds(calls: dict[str, Call], rounds: int, per_round: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    medians: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in range(rounds):
        order = SIDES[index % 3 :] + SIDES[: index % 3]
        for side in order:
            timed = []
            for _ in range(per_round):
                started = time.perf_counter()
                calls[side]()
                timed.append(time.perf_counter() - started)
            samples[side] += timed
            medians[side].append(summarize(timed).median)
    return {"samples": samples, "round_medians": medians}


def _throughput_rounds(
    calls: dict[str, Call],
    servers: dict[str, tuple[int, ...]],
    rounds: int,
    seconds: float,
    in_flight: int,
) -> dict[str, Any]:
    """Requests per second per window; CPU of ``servers`` (``client``, ``redis`` and
    each side's worker pids) over each side's windows."""
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    loaded: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu = {side: dict.fromkeys(("client", "worker", "redis"), 0.0) for side in SIDES}
    drivers = _Drivers(in_flight)
    try:
        for side in SIDES:  # warm every thread's result backend connection, untimed
            drivers.run(calls[side], 0.3)
        for index in range(rounds):
            order = SIDES[index % 3 :] + SIDES[: index % 3]
            for side in order:
                groups = {"client": servers["client"], "worker": servers[side],
                          "redis": servers["redis"]}  # fmt: skip
                before = {name: _cpu_seconds(pids) for name, pids in groups.items()}
                rate, latencies = drivers.run(calls[side], seconds)
                for name, pids in groups.items():
                    cpu[side][name] += _cpu_seconds(pids) - before[name]
                rates[side].append(rate)
                loaded[side] += latencies
    finally:
        drivers.close()
    # CPU per request: over every window of the side (requests finishing just after a
    # window are in its CPU but not its count: a few per mille).
    per_request = {
        side: {name: used / max(len(loaded[side]), 1) for name, used in cpu[side].items()}
        for side in SIDES
    }
    return {"rates": rates, "latencies": loaded, "cpu_per_request_s": per_request}


def bench_celery(
    harness: Harness,
    *,
    rounds: int = 10,
    calls: int = 40,
    warmup: int = 30,
    throughput_rounds: int = 5,
    seconds: float = 2.0,
    in_flight: int = 8,
) -> dict[str, Any]:
    """(i) Latency (one in flight) and throughput (``in_flight``) of the three sides."""
    stack = CeleryStack(harness)
    clients: list[Any] = []
    try:
        stack.start()
        plain_app = create_plain_app(stack.url)
        direct = Client(redis_url=stack.url, routing="direct")
        router = Client(redis_url=stack.url, routing="router")
        clients += [plain_app, direct, router]
        version = direct.set_rollout(100, "benchmark (i): zero-hop ping to the V3 lane")["version"]
        direct.wait_for_flags(version)
        _wait_until(lambda: direct.decide("ping") == "v3", 5.0, "the client to see 100 % V3")
        plain_task = plain_app.tasks[PLAIN_TASK]
        sides: dict[str, Call] = {
            "plain": _caller(plain_task.delay),
            "direct": _caller(lambda: direct.submit("ping")),
            "router": _caller(lambda: router.submit("ping")),
        }
        expected = {"plain": "plain", "direct": "v3", "router": "v3"}
        for side, call in sides.items():  # also waits for the workers to consume
            for _ in range(warmup):
                lane = call()
                if lane != expected[side]:
                    raise RuntimeError(f"{side}: ran on {lane!r}, expected {expected[side]!r}")
        latency = _latency_rounds(sides, rounds, calls)
        lane_p50 = LaneMetrics(direct.redis).summary("v3")["p50_ms"]
        stack.track()
        node = tuple(stack.node_tree())
        servers = {
            "client": (os.getpid(),),
            "redis": (stack.processes["redis"].pid,),
            "plain": (stack.processes["plain"].pid,),
            "direct": node,
            "router": node,
        }
        load = _throughput_rounds(sides, servers, throughput_rounds, seconds, in_flight)
    finally:
        for client in clients:
            client.close()
        stack.stop()
    return _report(latency, load, lane_p50, rounds, calls, throughput_rounds, seconds, in_flight)


def _report(
    latency: dict[str, Any],
    load: dict[str, Any],
    lane_p50_ms: float | None,
    rounds: int,
    calls: int,
    throughput_rounds: int,
    seconds: float,
    in_flight: int,
) -> dict[str, Any]:
    lat = {side: summarize(latency["samples"][side]) for side in SIDES}
    per_round = latency["round_medians"]
    direct_plain = ratio_summary(per_round["direct"], per_round["plain"])
    router_direct = ratio_summary(per_round["router"], per_round["direct"])
    router_plain = ratio_summary(per_round["router"], per_round["plain"])
    rates = {side: summarize(load["rates"][side]) for side in SIDES}
    loaded = {side: summarize(load["latencies"][side]) for side in SIDES}
    tp_ratio = ratio_summary(load["rates"]["direct"], load["rates"]["plain"])
    direct_over_plain = lat["direct"].median / lat["plain"].median
    flag = (
        f"FLAG: over {FLAG_ABOVE:g}x plain Celery"
        if direct_over_plain > FLAG_ABOVE
        else f"within {FLAG_ABOVE:g}x plain Celery"
    )
    ms = "{:.2f}"
    figures = [
        Figure(
            "i.direct_vs_plain",
            "(i) ping zero-hop (V3 lane) / plain Celery task",
            direct_over_plain,
            "x",
            f"per round {direct_plain.spread('{:.2f}')}",
            note=f"{flag}; ratio of medians, one in flight",
        ),
        Figure(
            "i.plain_ms",
            "    plain Celery delay().get()",
            lat["plain"].median * 1000,
            " ms",
            lat["plain"].spread(ms, 1000),
            note=f"{rounds} rounds x {calls} per side, order rotating",
        ),
        Figure(
            "i.direct_ms",
            "    zero-hop Client.submit('ping').get()",
            lat["direct"].median * 1000,
            " ms",
            lat["direct"].spread(ms, 1000),
            note="rollout 100 %: every request on the v3 lane",
        ),
        Figure(
            "i.lane_p50_ms",
            "    of which inside the v3 lane task (node's p50)",
            lane_p50_ms if lane_p50_ms is not None else float("nan"),
            " ms",
            "",
            note="LaneMetrics: run_lane start → end, last 1000",
        ),
        Figure(
            "i.router_vs_direct",
            "(i) ping through the router / zero-hop",
            lat["router"].median / lat["direct"].median,
            "x",
            f"per round {router_direct.spread('{:.2f}')}",
            note=f"router / plain {lat['router'].median / lat['plain'].median:.2f}x "
            f"(per round {router_plain.spread('{:.2f}')})",
        ),
        Figure(
            "i.router_ms",
            "    Client(routing='router') submit('ping').get()",
            lat["router"].median * 1000,
            " ms",
            lat["router"].spread(ms, 1000),
            note="snakepool.route → Task.replace → v3",
        ),
        Figure(
            "i.throughput_ratio",
            f"(i) throughput, {in_flight} in flight: zero-hop / plain",
            rates["direct"].median / rates["plain"].median,
            "x",
            f"per round {tp_ratio.spread('{:.2f}')}",
            note=f"{throughput_rounds} rounds x {seconds:g} s per side",
        ),
    ]
    cpu = load["cpu_per_request_s"]
    for side, label in (("plain", "plain Celery"), ("direct", "zero-hop"), ("router", "router")):
        used = cpu[side]
        figures.append(
            Figure(
                f"i.{side}_rps",
                f"    {label}",
                rates[side].median,
                " req/s",
                rates[side].spread("{:.0f}"),
                note=f"latency {loaded[side].median * 1000:.1f} ms; CPU/request: client "
                f"{used['client'] * 1000:.2f}, worker {used['worker'] * 1000:.2f}, "
                f"redis {used['redis'] * 1000:.2f} ms",
            )
        )
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "calls_per_round": calls,
            "latency_s": {side: lat[side].as_dict() for side in SIDES},
            "round_median_s": per_round,
            "per_round_direct_over_plain": direct_plain.as_dict(),
            "per_round_router_over_direct": router_direct.as_dict(),
            "v3_lane_p50_ms": lane_p50_ms,
            "throughput": {
                "rounds": throughput_rounds,
                "seconds": seconds,
                "in_flight": in_flight,
                "rps": {side: rates[side].as_dict() for side in SIDES},
                "latency_under_load_s": {side: loaded[side].as_dict() for side in SIDES},
                "per_round_direct_over_plain": tp_ratio.as_dict(),
                "cpu_per_request_s": cpu,
            },
        },
    }
