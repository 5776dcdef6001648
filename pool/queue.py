"""The wait queue: requests waiting for an interpreter, first come first served.

Not locked itself: :class:`~snakepool.pool.state.PoolState` owns it and holds its lock
around every call. A waiter is pinned to one interpreter (affinity) or takes any; an
interpreter is given to the FIRST waiter it may serve, so a pinned waiter at the head
never holds up the ones behind it that another interpreter could serve.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from snakepool import errors
from snakepool.pool.worker import Interpreter

__all__ = ["Ticket", "WaitQueue"]


class Ticket:
    """One request's claim on an interpreter, made by the caller before it asks.

    Because the caller holds the ticket before anything is granted, whatever is granted
    to it can always be found and given back, even if the caller is interrupted at the
    worst moment (see :meth:`PoolState.cancel <snakepool.pool.state.PoolState.cancel>`).

    ``wanted`` is the interpreter it is pinned to by affinity (None: any will do);
    ``interpreter`` is set when one is granted, ``error`` when the queue is failed;
    ``event`` (created when it is queued) is set in both cases.
    """

    __slots__ = ("affinity", "error", "event", "interpreter", "wanted")

    def __init__(self, affinity: str | None = None) -> None:
        self.affinity = affinity
        self.wanted: Interpreter | None = None
        self.event: threading.Event | None = None
        self.interpreter: Interpreter | None = None
        self.error: errors.SnakepoolError | None = None


class WaitQueue:
    """Tickets in arrival order."""

    def __init__(self) -> None:
        self._tickets: deque[Ticket] = deque()

    def __len__(self) -> int:
        return len(self._tickets)

    def __iter__(self) -> Iterator[Ticket]:
        return iter(self._tickets)

    def append(self, ticket: Ticket) -> None:
        """Queue ``ticket`` at the end."""
        ticket.event = threading.Event()
        self._tickets.append(ticket)

    def remove(self, ticket: Ticket) -> bool:
        """Take ``ticket`` out (timed out or cancelled); False if it was not queued."""
        try:
            self._tickets.remove(ticket)
        except ValueError:
            return False
        return True

    def take_for(self, interpreter: Interpreter) -> Ticket | None:
        """Remove and return the first ticket ``interpreter`` may serve, if any."""
        for ticket in self._tickets:
            if ticket.wanted is None or ticket.wanted is interpreter:
                self._tickets.remove(ticket)
                return ticket
        return None

    def has_unpinned(self) -> bool:
        """Whether some ticket would take any interpreter."""
        return any(ticket.wanted is None for ticket in self._tickets)

    def unpin(self, interpreter: Interpreter) -> None:
        """``interpreter`` left service: its tickets take any interpreter now."""
        for ticket in self._tickets:
            if ticket.wanted is interpreter:
                ticket.wanted = None

    def pin(self, affinity: str, interpreter: Interpreter) -> None:
        """``affinity`` was bound to ``interpreter``: unpinned tickets with that key wait
        for it from now on (one key, one interpreter)."""
        for ticket in self._tickets:
            if ticket.wanted is None and ticket.affinity == affinity:
                ticket.wanted = interpreter

    def fail_all(self, error: errors.SnakepoolError) -> None:
        """Empty the queue, waking every waiter with ``error``."""
        while self._tickets:
            ticket = self._tickets.popleft()
            ticket.error = error
            assert ticket.event is not None
            ticket.event.set()

    def pinned_to(self) -> tuple[int | None, ...]:
        """The seq each ticket is pinned to (None: any), in queue order."""
        return tuple(t.wanted.seq if t.wanted is not None else None for t in self._tickets)
