"""The controller's lease: only one rollout controller acts at a time.

A Redis string with a TTL holds the id of the controller allowed to act. Each controller
tries to take it (``SET NX PX``) or, holding it, renews it, well before it expires; the
others are standby and keep trying. When the acting controller stops cleanly it gives
the lease up, and a standby takes over at its next try; when it dies, the lease expires
``ttl`` seconds after its last renewal, and a standby takes over then.

Renewal and release are compare-and-set (``WATCH``): a controller whose lease already
expired, and was taken by another, never extends or deletes the other's.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import redis

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
        self.key = Keys(prefix).controller_lease
        self.holder = holder
        self.ttl = ttl

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def acquire(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; whether we hold it now.

        Raises:
            redis.RedisError: Redis cannot be reached (the caller holds nothing then).
        """
        if self.client.set(self.key, self.holder, nx=True, px=self._ttl_ms):
            return True
        return self._if_ours(lambda pipe: pipe.pexpire(self.key, self._ttl_ms))

    def release(self) -> bool:
        """Give the lease up if it is ours (a standby takes over at once); whether it was."""
        return self._if_ours(lambda pipe: pipe.delete(self.key))

    def current(self) -> str | None:
        """The id of the controller holding the lease, or None."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _if_ours(self, action: Callable[[Any], object]) -> bool:
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)  # type: ignore[no-untyped-call]
                raw = pipe.get(self.key)
                if raw is None or (raw.decode() if isinstance(raw, bytes) else raw) != self.holder:
                    pipe.unwatch()
                    return False
                pipe.multi()
                action(pipe)
                pipe.execute()
                return True
            except redis.WatchError:  # changed under us: another controller has it now
                return False
