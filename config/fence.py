"""Fencing: a change that applies only while its writer still holds the right to make it.

A lease (a Redis key with a TTL) says who may act; but a holder that paused — a GC
pause, SIGSTOP, a slow Redis — past its lease can wake up and write after another
holder took over. A :class:`Fence` closes that gap: it names keys and the values they
held when the writer's right began (the lease's holder id, the acquisition's fencing
token), and :meth:`FlagStore.update <snakepool.config.flags.FlagStore.update>` checks
them inside the transaction that writes the flags (``WATCH``ed with the flags key), so
a stale writer's change is refused (:class:`~snakepool.errors.StaleFence`) and never
lands, however long it slept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snakepool.errors import StaleFence

__all__ = ["Fence", "StaleFence"]


@dataclass(frozen=True)
class Fence:
    """The keys a fenced write checks, and the values they must hold.

    Args:
        expected: ``(key, value)`` pairs, all of which must hold for the write to apply.
        token: The writer's fencing token (said in the refusal and the audit entry).
    """

    expected: tuple[tuple[str, str], ...]
    token: int

    @property
    def keys(self) -> list[str]:
        """The keys to ``WATCH`` with the written ones."""
        return [key for key, _ in self.expected]

    def check(self, client: Any) -> None:
        """Raise unless every key holds its expected value (call it after ``WATCH``).

        Args:
            client: A redis-py client or a pipeline in immediate (watching) mode.

        Raises:
            StaleFence: a key holds another value or none: the writer's right is gone.
        """
        for key, value in self.expected:
            raw = client.get(key)
            now = raw.decode() if isinstance(raw, bytes) else raw
            if now != value:
                raise StaleFence(
                    f"fencing token {self.token} is stale: {key} is {now!r}, not {value!r}",
                    token=self.token,
                    why=f"{key} is {now!r}",
                )
