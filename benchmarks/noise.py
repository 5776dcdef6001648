"""How busy the machine was with other work while a benchmark ran.

The machine's busy CPU time (``psutil.cpu_times``) minus our own process tree's (from
``os.times``, which includes every child we reaped — templates included, and through
them their interpreters) is the CPU time of everything else. Divided by the wall time,
it says how many CPUs, on average, were taken by neighbours: on a 2-vCPU machine, 0.9
means about half the machine was not ours.

Exact once every process of the benchmark has been reaped, which is how every benchmark
ends; for a shorter stretch with live children, name their pids (``live_pids``) and
their run time is read from ``/proc/PID/schedstat`` instead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

__all__ = ["CpuMeter", "Noise", "run_seconds"]


@dataclass(frozen=True, slots=True)
class Noise:
    """Average CPUs in use over a benchmark: by others, by us, and stolen by the host."""

    seconds: float
    others_cpus: float
    ours_cpus: float
    steal_cpus: float

    def describe(self) -> str:
        """One line for the terminal."""
        return (
            f"{self.seconds:.0f} s; CPUs busy with other work {self.others_cpus:.2f}, "
            f"ours {self.ours_cpus:.2f}, stolen {self.steal_cpus:.2f}"
        )


def _busy_and_steal() -> tuple[float, float]:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    steal = getattr(times, "steal", 0.0)
    # Linux counts guest time inside user time already.
    busy = sum(times) - idle - steal - getattr(times, "guest", 0.0)
    busy -= getattr(times, "guest_nice", 0.0)
    return busy, steal


def run_seconds(pid: int) -> float:
    """CPU seconds of one (single-threaded) process: exact run time from
    ``/proc/PID/schedstat`` on Linux, else ``cpu_times`` (clock ticks); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)


def _ours(live_pids: tuple[int, ...]) -> float:
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return own + sum(run_seconds(pid) for pid in live_pids)


class CpuMeter:
    """``with CpuMeter() as meter: ...``; then ``meter.noise``.

    Args:
        live_pids: Our processes that stay alive through the measured stretch (not
            reaped by its end, so not in ``os.times``).
    """

    def __init__(self, live_pids: tuple[int, ...] = ()) -> None:
        self.noise: Noise | None = None
        self.live_pids = live_pids
        self._start = (0.0, 0.0, 0.0, 0.0)

    def __enter__(self) -> CpuMeter:
        busy, steal = _busy_and_steal()
        self._start = (time.monotonic(), busy, steal, _ours(self.live_pids))
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, steal0, ours0 = self._start
        busy, steal = _busy_and_steal()
        seconds = max(time.monotonic() - wall0, 1e-6)
        ours = _ours(self.live_pids) - ours0
        self.noise = Noise(
            seconds=seconds,
            others_cpus=max(0.0, (busy - busy0) - ours) / seconds,
            ours_cpus=ours / seconds,
            steal_cpus=(steal - steal0) / seconds,
        )
