"""A consistent, point-in-time copy of a pool's state (what ``Pool.stats()`` reports)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Taken under the state's lock, so the numbers add up.

    ``busy`` includes interpreters leased for a health check; ``latencies`` are the
    recent request durations in seconds, sorted. ``idle_seqs`` and ``waiting_for`` (the
    interpreter each waiter is pinned to, None for any, in queue order) are there to
    check the queue's invariants.
    """

    phase: str
    starting: int
    idle: int
    busy: int
    queued: int
    counts: dict[str, int]
    latencies: list[float]
    unavailable: str | None
    pids: list[int]
    idle_seqs: tuple[int, ...]
    waiting_for: tuple[int | None, ...]

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the latencies in milliseconds (None if none)."""
        if not self.latencies:
            return None
        index = min(len(self.latencies) - 1, round(q * (len(self.latencies) - 1)))
        return round(self.latencies[index] * 1000, 3)
