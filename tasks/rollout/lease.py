"""The controller's lease: only one rollout controller acts at a time, fenced.

A Redis string with a TTL holds the id of the controller allowed to act. Each controller
tries to take it or, holding it, renews it, well before it expires; the others are
standby and keep trying. When the acting controller stops cleanly it gives the lease
up, and a standby takes over at its next try; when it dies, the lease expires ``ttl``
seconds after its last renewal, and a standby takes over then.

**Fencing.** A lease alone cannot stop a controller that paused (GC, SIGSTOP, a slow
Redis) past its lease from waking up and writing a decision made before the pause,
after another controller took over. So every acquisition takes a **fencing token**:
``controller:fence`` is incremented in the same transaction (``WATCH``/``MULTI``) that
sets the lease, so tokens grow with every acquisition and the newest is the current
holder's. Every change the controller makes to the flags carries a
:class:`~snakepool.config.fence.Fence` (:meth:`ControllerLease.fence`: the lease still
names this controller and the counter still holds its token), which
:meth:`FlagStore.update <snakepool.config.flags.FlagStore.update>` checks atomically
with the write: a stale controller's change is refused
(:class:`~snakepool.errors.StaleFence`) and it goes back to standby.

Renewal and release are compare-and-set on both keys (``WATCH``): a controller whose
lease already expired, and was taken by another, never extends or deletes the other's.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import redis

from snakepool.config.fence import Fence
from snakepool.config.keys import DEFAULT_PREFIX, Keys

__all__ = ["ControllerLease", "controller_id"]


def controller_id() -> str:
    """A new controller's id: ``host:pid:random`` (unique even for a reused pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ControllerLease:
    """The lease, as one controller sees it.

    Args:
        client: redis-py client.
        prefix: Key prefix.
        holder: This controller's id (:func:`controller_id`).
        ttl: Seconds the lease lives unless renewed.
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, holder: str, ttl: float
    ) -> None:
        self.client = client
        keys = Keys(prefix)
        self.key = keys.controller_lease
        self.fence_key = keys.controller_fence
        self.holder = holder
        self.ttl = ttl
        #: The fencing token of this controller's acquisition while it believes it holds
        #: the lease (None otherwise).
        self.token: int | None = None

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def acquire(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; whether we hold it now.

        Taking it sets :attr:`token` to a new fencing token, larger than any before;
        renewing keeps it.

        Raises:
            redis.RedisError: Redis cannot be reached (the caller holds nothing then).
        """
        if self.token is not None:
            if self._if_ours(lambda pipe: pipe.pexpire(self.key, self._ttl_ms)):
                return True
            self.token = None  # expired, maybe taken by another: a new acquisition
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)  # type: ignore[no-untyped-call]
                if pipe.exists(self.key):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(self.key, self.holder, px=self._ttl_ms)
                pipe.incr(self.fence_key)
                _, token = pipe.execute()
            except redis.WatchError:  # another controller took it first
                return False
        self.token = int(token)
        return True

    def fence(self) -> Fence:
        """What a change made under this lease must still find true to apply.

        Raises:
            RuntimeError: this controller does not hold the lease (no token).
        """
        if self.token is None:
            raise RuntimeError("no fencing token: the lease is not held")
        return Fence(((self.key, self.holder), (self.fence_key, str(self.token))), self.token)

    def lost(self) -> None:
        """Forget the token: a fenced change was refused, another controller acts."""
        self.token = None

    def release(self) -> bool:
        """Give the lease up if it is ours (a standby takes over at once); whether it was."""
        released = self.token is not None and self._if_ours(lambda pipe: pipe.delete(self.key))
        self.token = None
        return released

    def current(self) -> str | None:
        """The id of the controller holding the lease, or None."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _if_ours(self, action: Callable[[Any], object]) -> bool:
        """Run ``action`` in a transaction if the lease and the token are still ours."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key, self.fence_key)  # type: ignore[no-untyped-call]
                holder, token = pipe.get(self.key), pipe.get(self.fence_key)
                if _text(holder) != self.holder or _text(token) != str(self.token):
                    pipe.unwatch()
                    return False
                pipe.multi()
                action(pipe)
                pipe.execute()
                return True
            except redis.WatchError:  # changed under us: another controller has it now
                return False


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw
