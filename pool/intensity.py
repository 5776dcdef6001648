"""Restart intensity, OTP-style: at most R unplanned restarts in T seconds.

Past that, back off exponentially (0.5 s, 1 s, 2 s … capped), so a crash loop can
never become a fork loop. A calm period — no restart for a whole window — resets the
back-off.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["BACKOFF_BASE_SECONDS", "BACKOFF_MAX_SECONDS", "RestartIntensity"]

#: First back-off after the intensity is exceeded; doubles each time.
BACKOFF_BASE_SECONDS = 0.5
#: Longest back-off.
BACKOFF_MAX_SECONDS = 30.0


class RestartIntensity:
    """Counts unplanned restarts in a sliding window (thread-safe: a loss is recorded by
    whichever thread saw it).

    Args:
        intensity: Restarts allowed within ``period``.
        period: The window, in seconds.
    """

    def __init__(self, *, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._restarts: deque[float] = deque()
        self._level = 0
        self._lock = threading.Lock()
        #: No respawn before this (monotonic) time: the end of the current back-off.
        self.respawn_at = 0.0

    def __len__(self) -> int:
        return len(self._restarts)

    def record(self, now: float) -> float | None:
        """Count one restart at ``now``; return the back-off delay if over the intensity
        (and push :attr:`respawn_at` to its end)."""
        with self._lock:
            return self._record(now)

    def _record(self, now: float) -> float | None:
        while self._restarts and now - self._restarts[0] > self.period:
            self._restarts.popleft()
        if not self._restarts:
            self._level = 0
        self._restarts.append(now)
        if len(self._restarts) <= self.intensity:
            return None
        delay = float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**self._level))
        self._level += 1
        self.respawn_at = max(self.respawn_at, now + delay)
        return delay
