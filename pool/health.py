"""Health pings in flight: which interpreter was pinged, with which request id, until when.

Only idle interpreters are pinged (leased as CHECKING, so a ping never waits behind a
request), and an interpreter that just served a request needs none. Ping ids are
negative, so they can never be mistaken for a request's reply.
"""

from __future__ import annotations

import itertools

from snakepool.pool.interpreter import wire
from snakepool.pool.watch import Watch
from snakepool.pool.worker import Interpreter

__all__ = ["HEALTH_TIMEOUT_SECONDS", "HealthChecks"]

#: How long a health ping may take before the interpreter is replaced.
HEALTH_TIMEOUT_SECONDS = 5.0


class HealthChecks:
    """Pending pings, keyed by interpreter; used by the supervisor thread only.

    Args:
        timeout: Seconds a ping may take.
        watch: The supervisor's selector, which waits for the replies.
    """

    def __init__(self, *, timeout: float, watch: Watch) -> None:
        self.timeout = timeout
        self.watch = watch
        self._pending: dict[int, tuple[int, float]] = {}  # seq → (request id, deadline)
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def ping(self, interpreter: Interpreter, now: float) -> bool:
        """Send a ping to a CHECKING interpreter and watch for the reply; False if it
        could not be delivered (within a second: the pipe of an idle one is empty)."""
        rid = -next(self._ids)
        try:
            interpreter.channel.send(wire.Request(rid, "ping", {}).encode(), now + 1.0)
        except Exception:
            return False
        self._pending[interpreter.seq] = (rid, now + self.timeout)
        self.watch.watch_reply(interpreter)
        return True

    def pending(self, interpreter: Interpreter) -> bool:
        """Whether a ping of ``interpreter`` awaits its reply."""
        return interpreter.seq in self._pending

    def answered(self, interpreter: Interpreter, reply: wire.Reply) -> bool:
        """End the check; True if ``reply`` is the right, successful answer."""
        rid, _ = self._pending.pop(interpreter.seq)
        self.watch.unwatch_reply(interpreter)
        return reply.id == rid and reply.ok

    def end(self, interpreter: Interpreter) -> None:
        """Forget any ping of ``interpreter`` (it left service or broke)."""
        if self._pending.pop(interpreter.seq, None) is not None:
            self.watch.unwatch_reply(interpreter)

    def overdue(self, now: float) -> list[int]:
        """Seqs of the interpreters whose ping is past its deadline."""
        return [seq for seq, (_, deadline) in self._pending.items() if now > deadline]

    def deadlines(self) -> list[float]:
        """The deadlines of the pings in flight."""
        return [deadline for _, deadline in self._pending.values()]
