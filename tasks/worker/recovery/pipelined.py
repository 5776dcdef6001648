"""Commands sent on a connection of their own without waiting; replies read later, in order.

The in-flight record writes "started" for every request (and, for a message that did
not come through the reliable pop, "received" and "finished" too). Waiting for each
reply put Redis round trips on every request's path (one before the task runs, one in
the consumer thread before the message is handed to a worker thread). Here a command is
written to the socket and the caller goes on; its reply is read by whoever comes next —
a :meth:`Pipelined.send` once :data:`READ_AFTER` are pending reads those in by then,
:meth:`Pipelined.settle` all of them (waiting) — and handed to the callback given with
the command.

Why the record stays as safe as before: Redis runs one connection's commands in the
order it receives them, and a command written to the socket reaches Redis even if the
process dies just after (the kernel sends what was written). So "started" is in Redis
before anything the task sends, and a node that dies mid-task is still seen to have
started it.

Replies are read in the order the commands were sent. A refused command (``ResponseError``)
goes to its callback as the exception; a broken connection loses the replies still
pending (their callbacks are not called) and raises, as a failed synchronous call did.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

__all__ = ["READ_AFTER", "OnReply", "Pipelined"]

#: Replies left unread before a send reads those already in. Checking the socket costs
#: three system calls (redis-py toggles it non-blocking and back); Redis's few bytes per
#: reply wait in the socket's buffer meanwhile, and ``settle`` (the record's beat, every
#: second) reads them all.
READ_AFTER = 32
#: What receives a command's reply: the reply, or the ``ResponseError`` Redis answered.
OnReply = Callable[[Any], None]


class Pipelined:
    """One connection of ``client``'s pool, for commands whose replies can wait.

    Thread-safe. Callbacks run in whichever thread reads the reply, under this object's
    lock: they must not call back into it.

    Args:
        client: redis-py client (its connection pool provides the connection).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pending: deque[OnReply | None] = deque()

    def send(self, *command: Any, on_reply: OnReply | None = None) -> None:
        """Write ``command`` now; its reply goes to ``on_reply`` when it is read.

        Raises:
            redis.RedisError: the connection failed (the replies pending are lost).
        """
        with self._lock:
            if len(self._pending) >= READ_AFTER:
                self._read(wait=False)
            if self._connection is None:
                self._connection = self.client.connection_pool.get_connection()
            try:
                self._connection.send_command(*command)
            except Exception:
                self._reset()
                raise
            self._pending.append(on_reply)

    def settle(self) -> None:
        """Read every pending reply (waiting for those not in yet).

        Raises:
            redis.RedisError: the connection failed (the replies pending are lost).
        """
        with self._lock:
            self._read(wait=True)

    @property
    def pending(self) -> int:
        """Replies not read yet."""
        return len(self._pending)

    def _read(self, *, wait: bool) -> None:
        """Under the lock: read replies in order; only those already in unless ``wait``."""
        while self._pending:
            try:
                if not wait and not self._connection.can_read(timeout=0):
                    return
                try:
                    reply = self._connection.read_response()
                except redis.ResponseError as exc:
                    reply = exc
            except Exception:
                self._reset()
                raise
            on_reply = self._pending.popleft()
            if on_reply is not None:
                on_reply(reply)

    def _reset(self) -> None:
        """Under the lock: forget a broken connection (the next send reconnects)."""
        self._pending.clear()
        if self._connection is not None:
            self._connection.disconnect()
            self.client.connection_pool.release(self._connection)
            self._connection = None
