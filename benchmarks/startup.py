"""(a) pool start vs one cold interpreter, and (b) replacement after SIGKILL.

Both use :mod:`benchmarks.heavy_adapter`, whose import costs about a second of CPU: the
point of the template ("zygote") is that this second is paid once per pool, not once
per interpreter, and never again when an interpreter is replaced.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Harness, TrackingObserver
from benchmarks.stats import Figure, ratio_summary, summarize

__all__ = ["HEAVY", "ReadyTimes", "bench_pool_start", "bench_replacement"]

#: The adapter under test.
HEAVY = "benchmarks.heavy_adapter"
#: Seconds to let exiting processes finish between timed sections.
SETTLE_SECONDS = 0.3


class ReadyTimes(TrackingObserver):
    """Collects every interpreter's spawn-to-ready time as the pool reports it."""

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness)
        self.startup_seconds: list[float] = []

    def on_interpreter_ready(self, pid: int, seq: int, startup_seconds: float) -> None:
        """Record the fork-to-handshake time."""
        self.startup_seconds.append(startup_seconds)
        super().on_interpreter_ready(pid, seq, startup_seconds)


def time_starts(
    harness: Harness,
    *,
    rounds: int,
    cold: Callable[[], float],
    make_pool: Callable[[ReadyTimes], Any],
) -> tuple[list[float], list[float], ReadyTimes]:
    """Interleave ``rounds`` cold starts (``cold()`` returns seconds) and pool starts.

    Rounds alternate which side goes first, so a slow patch of the machine is shared.
    Returns (cold seconds, pool-start seconds, every interpreter's fork-to-ready time).
    """
    cold_times: list[float] = []
    pooled: list[float] = []
    ready = ReadyTimes(harness)
    for index in range(rounds):
        for side in ("cold", "pool") if index % 2 == 0 else ("pool", "cold"):
            time.sleep(SETTLE_SECONDS)
            if side == "cold":
                cold_times.append(cold())
                continue
            pool = make_pool(ready)
            try:
                started = time.perf_counter()
                pool.start()
                pooled.append(time.perf_counter() - started)
            finally:
                harness.stop_pool(pool)
    return cold_times, pooled, ready


def start_report(
    letter: str,
    *,
    ratio_label: str,
    pool_label: str,
    cold: tuple[str, str, list[float]],
    target: float,
    note: str,
    rounds: int,
    size: int,
    pooled: list[float],
    ready: ReadyTimes,
) -> dict[str, Any]:
    """Figures and data of a pool-start benchmark; ``cold`` is (key, label, seconds)."""
    cold_key, cold_label, cold_times = cold
    cold_s, pool_s = summarize(cold_times), summarize(pooled)
    per_round = ratio_summary(pooled, cold_times)
    fork_ready = summarize(ready.startup_seconds)
    figures = [
        Figure(
            f"{letter}.ratio",
            ratio_label,
            pool_s.median / cold_s.median,
            "x",
            f"per round {per_round.spread('{:.2f}')}",
            ("<=", target),
            note,
        ),
        Figure(f"{letter}.pool_start", pool_label, pool_s.median, " s", pool_s.spread("{:.2f}")),
        Figure(f"{letter}.{cold_key}", cold_label, cold_s.median, " s", cold_s.spread("{:.2f}")),
        Figure(
            f"{letter}.fork_to_ready",
            "    each interpreter: fork request → Ready",
            fork_ready.median * 1000,
            " ms",
            fork_ready.spread("{:.1f}", 1000),
        ),
    ]
    return {
        "figures": figures,
        "data": {
            "rounds": rounds,
            "size": size,
            "pool_start_s": pool_s.as_dict(),
            f"{cold_key}_s": cold_s.as_dict(),
            "per_round_ratio": per_round.as_dict(),
            "interpreter_startup_s": fork_ready.as_dict(),
        },
    }


def bench_pool_start(harness: Harness, *, rounds: int = 5, size: int = 8) -> dict[str, Any]:
    """(a) ``Pool(size=8).start()`` vs one cold ``python -m snakepool.pool.interpreter.server``.

    Rounds alternate which side goes first, so a slow patch of the machine is shared.
    One cold spawn before the rounds warms the page cache for both sides.
    """
    harness.cold_spawn(HEAVY)
    cold, pooled, ready = time_starts(
        harness,
        rounds=rounds,
        cold=lambda: harness.cold_spawn(HEAVY),
        make_pool=lambda ready: harness.pool(
            size=size, adapter=HEAVY, start_method="forkserver", observer=ready
        ),
    )
    return start_report(
        "a",
        ratio_label=f"(a) Pool(size={size}).start() / one cold spawn",
        pool_label=f"    pool of {size} start",
        cold=("cold_spawn", "    one cold spawn to Ready", cold),
        target=1.2,
        note="ratio of medians",
        rounds=rounds,
        size=size,
        pooled=pooled,
        ready=ready,
    )


class _KillWatch(TrackingObserver):
    """Timestamps (``perf_counter``) of interpreter exits and readiness, taken first thing."""

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness)
        self.ready = threading.Event()
        self.exited: dict[int, float] = {}
        self.ready_at = 0.0
        self.ready_pid = 0
        self.ready_startup = 0.0
        self.ignore: set[int] = set()

    def on_interpreter_exit(self, pid: int, exit_code: int | None, signal: int | None) -> None:
        """Note when the pool learnt of the exit."""
        self.exited[pid] = time.perf_counter()

    def on_interpreter_ready(self, pid: int, seq: int, startup_seconds: float) -> None:
        """Note the first readiness of an interpreter we have not seen before."""
        now = time.perf_counter()
        if pid not in self.ignore and not self.ready.is_set():
            self.ready_at, self.ready_pid, self.ready_startup = now, pid, startup_seconds
            self.ready.set()
        super().on_interpreter_ready(pid, seq, startup_seconds)


def _kill_loop(harness: Harness, kills: int, size: int) -> dict[str, list[float]]:
    """Kill an idle interpreter ``kills`` times; seconds of each phase, per kill."""
    watch = _KillWatch(harness)
    pool = harness.pool(size=size, adapter=HEAVY, restart_intensity=1000, observer=watch)
    phases: dict[str, list[float]] = {"total": [], "detect": [], "respawn": []}
    try:
        pool.start()
        for _ in range(kills):
            time.sleep(0.1)
            pool.execute("ping")  # the pool serves; every interpreter is idle again
            pids = pool.interpreter_pids()
            victim = pids[0]
            watch.ignore = set(pids)
            watch.ready.clear()
            started = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            if not watch.ready.wait(30.0):
                raise RuntimeError(f"no replacement ready 30 s after killing pid {victim}")
            phases["total"].append(watch.ready_at - started)
            phases["respawn"].append(watch.ready_startup)
            if victim in watch.exited:
                phases["detect"].append(watch.exited[victim] - started)
    finally:
        harness.stop_pool(pool)
    return phases


def bench_replacement(harness: Harness, *, kills: int = 20, size: int = 2) -> dict[str, Any]:
    """(b) ``os.kill(idle interpreter, SIGKILL)`` → ``on_interpreter_ready`` of its replacement.

    ``restart_intensity`` is raised so that 20 deliberate kills within a few seconds
    measure replacement, not the crash-loop back-off (20 per 10 s by default).

    (Earlier versions also ran a diagnostic pass with ``Pool(preload=("ctypes",))``:
    since ``ctypes`` is imported in the template itself, by
    :mod:`snakepool.pool.interpreter.server` at import, that pass measured the same thing twice.)
    """
    main = _kill_loop(harness, kills, size)
    total_s, detect_s = summarize(main["total"]), summarize(main["detect"])
    respawn_s = summarize(main["respawn"])
    figures = [
        Figure(
            "b.kill_to_ready",
            "(b) SIGKILL idle → replacement ready (median)",
            total_s.median * 1000,
            " ms",
            total_s.spread("{:.1f}", 1000),
            ("<=", 10.0),
            f"{kills} kills, pool size {size}",
        ),
        Figure(
            "b.kill_to_exit",
            "    SIGKILL → pool told of the exit",
            detect_s.median * 1000,
            " ms",
            detect_s.spread("{:.1f}", 1000),
        ),
        Figure(
            "b.spawn_to_ready",
            "    replacement: fork request → Ready",
            respawn_s.median * 1000,
            " ms",
            respawn_s.spread("{:.1f}", 1000),
        ),
    ]
    data: dict[str, Any] = {
        "kills": kills,
        "size": size,
        "kill_to_ready_s": total_s.as_dict(),
        "kill_to_exit_report_s": detect_s.as_dict(),
        "spawn_to_ready_s": respawn_s.as_dict(),
    }
    return {"figures": figures, "data": data}
