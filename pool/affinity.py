"""Affinity: requests with the same key go to the same interpreter while it lives.

A bounded map of key → interpreter seq, least recently used forgotten first. Not
locked itself: :class:`~snakepool.pool.state.PoolState` holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_AFFINITY_KEYS", "Affinity"]

#: Affinity keys remembered (least recently used forgotten first).
MAX_AFFINITY_KEYS = 100_000


class Affinity:
    """Key → interpreter seq, LRU-bounded.

    Args:
        max_keys: Keys remembered at most.
    """

    def __init__(self, max_keys: int = MAX_AFFINITY_KEYS) -> None:
        self.max_keys = max_keys
        self._seqs: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seqs)

    def seq_of(self, key: str) -> int | None:
        """The seq ``key`` is bound to (marking it recently used), or None."""
        seq = self._seqs.get(key)
        if seq is not None:
            self._seqs.move_to_end(key)
        return seq

    def bind(self, key: str, seq: int) -> bool:
        """Bind ``key`` to ``seq``; True if that changed the binding."""
        if self._seqs.get(key) == seq:
            return False
        self._seqs[key] = seq
        self._seqs.move_to_end(key)
        while len(self._seqs) > self.max_keys:
            self._seqs.popitem(last=False)
        return True
