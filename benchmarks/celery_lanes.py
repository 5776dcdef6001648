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
  the node and publishes the same V3 task under the caller's task id.

Latency: one request in flight, rounds of ``calls`` per side, the order rotating every
round. Shadow: the zero-hop latency again with shadowing on (rate 1.0: every ``ping``
also runs on V2-compat) and off, alternating. Throughput: ``in_flight`` threads
submitting back to back for a fixed window per side, same rotation; only requests
completed inside the window count. During those windows the CPU time of this process
(the clients), of the worker serving the side (the node with its interpreters, or the
plain worker) and of redis-server is read, and Redis's ``INFO commandstats``, so that
the figures say where each request's CPU and Redis commands go.
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
import redis

from benchmarks.celery_report import SIDES, report
from benchmarks.celery_stack import CeleryStack
from benchmarks.harness import Harness
from benchmarks.plain_app import PLAIN_TASK, create_plain_app
from benchmarks.redis_stats import CommandCounter
from benchmarks.stats import summarize
from snakepool.tasks.client import Client
from snakepool.tasks.rollout.metrics import LaneMetrics

__all__ = ["bench_celery"]

#: Seconds to wait for one result (only a stuck stack would reach it).
RESULT_TIMEOUT = 30.0
#: Seconds after a flag change before the zero-hop client's FlagCache has re-read it
#: (it checks the version at most every 0.5 s).
CLIENT_FLAGS_SECONDS = 0.6

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

    def run(self, call: Call, seconds: float) -> tuple[int, list[float]]:
        """Requests completed inside a window of ``seconds``, and their latencies."""
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
        return completed, latencies

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


def _timed(call: Call, count: int) -> list[float]:
    timed = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        timed.append(time.perf_counter() - started)
    return timed


def _latency_rounds(calls: dict[str, Call], rounds: int, per_round: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    medians: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in range(rounds):
        order = SIDES[index % 3 :] + SIDES[: index % 3]
        for side in order:
            timed = _timed(calls[side], per_round)
            samples[side] += timed
            medians[side].append(summarize(timed).median)
    return {"samples": samples, "round_medians": medians}


def _shadow_rounds(client: Client, call: Call, rounds: int, per_round: int) -> dict[str, Any]:
    """Zero-hop latency with shadowing off and on (rate 1.0), alternating which goes first.

    The copies are counted: an "on" round that shadowed nothing would measure nothing.
    """
    samples: dict[str, list[float]] = {"off": [], "on": []}
    medians: dict[str, list[float]] = {"off": [], "on": []}
    before = client.shadows.counts()["compared"]
    waiting: list[int] = []  # copies not yet compared as each "on" round ends
    try:
        for index in range(rounds):
            for mode in ("off", "on") if index % 2 == 0 else ("on", "off"):
                client.set_shadow(mode == "on", rate=1.0)
                time.sleep(CLIENT_FLAGS_SECONDS)  # the client's own flag cache, no event
                _timed(call, 3)  # untimed: the first requests after the switch
                timed = _timed(call, per_round)
                samples[mode] += timed
                medians[mode].append(summarize(timed).median)
                if mode == "on":
                    sent = len(medians["on"]) * (per_round + 3)
                    waiting.append(sent - (client.shadows.counts()["compared"] - before))
    finally:
        client.set_shadow(False)
    expected = rounds * (per_round + 3)
    _wait_until(
        lambda: client.shadows.counts()["compared"] - before >= expected,
        30.0,
        f"{expected} shadow comparisons",
    )
    compared = client.shadows.counts()["compared"] - before
    return {"samples": samples, "round_medians": medians, "compared": compared,
            "waiting_at_round_end": waiting, "per_round_sent": per_round + 3}  # fmt: skip


def _throughput_rounds(
    calls: dict[str, Call],
    servers: dict[str, tuple[int, ...]],
    commands: CommandCounter,
    rounds: int,
    seconds: float,
    in_flight: int,
) -> dict[str, Any]:
    """Requests per second per window; per window, the CPU of ``servers`` (``client``,
    ``redis`` and each side's worker pids) and Redis's commands."""
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    loaded: dict[str, list[float]] = {side: [] for side in SIDES}
    requests: dict[str, int] = dict.fromkeys(SIDES, 0)
    commands_per_round: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, dict[str, list[float]]] = {
        side: {name: [] for name in ("client", "worker", "redis")} for side in SIDES
    }
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
                commands.start()
                completed, latencies = drivers.run(calls[side], seconds)
                used_commands = commands.stop(side)
                commands_per_round[side].append(sum(used_commands.values()) / max(completed, 1))
                for name, pids in groups.items():
                    # Per request of this window (requests finishing just after it are in
                    # its CPU but not its count: a few per mille).
                    used = _cpu_seconds(pids) - before[name]
                    cpu[side][name].append(used / max(completed, 1))
                rates[side].append(completed / seconds)
                loaded[side] += latencies
                requests[side] += completed
    finally:
        drivers.close()
    return {
        "rates": rates,
        "latencies": loaded,
        "requests": requests,
        "cpu_per_request_s": cpu,
        "commands": {side: dict(commands.by_side.get(side, {})) for side in SIDES},
        "commands_per_round": commands_per_round,
    }


def bench_celery(
    harness: Harness,
    *,
    rounds: int = 10,
    calls: int = 40,
    warmup: int = 30,
    shadow_rounds: int = 6,
    throughput_rounds: int = 5,
    seconds: float = 2.0,
    in_flight: int = 8,
) -> dict[str, Any]:
    """(i) Latency (one in flight), shadow on/off, throughput (``in_flight``)."""
    stack = CeleryStack(harness)
    clients: list[Any] = []
    try:
        stack.start()
        plain_app = create_plain_app(stack.url)
        direct = Client(redis_url=stack.url, routing="direct")
        router = Client(redis_url=stack.url, routing="router")
        stats = redis.Redis.from_url(stack.url)
        clients += [plain_app, direct, router, stats]
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
        shadow = _shadow_rounds(direct, sides["direct"], shadow_rounds, calls)
        stack.track()
        node = tuple(stack.node_tree())
        servers = {
            "client": (os.getpid(),),
            "redis": (stack.processes["redis"].pid,),
            "plain": (stack.processes["plain"].pid,),
            "direct": node,
            "router": node,
        }
        load = _throughput_rounds(
            sides, servers, CommandCounter(stats), throughput_rounds, seconds, in_flight
        )
    finally:
        for client in clients:
            client.close()
        stack.stop()
    return report(
        latency, shadow, load, lane_p50,
        rounds=rounds, calls=calls, throughput_rounds=throughput_rounds, seconds=seconds,
        in_flight=in_flight,
    )  # fmt: skip
