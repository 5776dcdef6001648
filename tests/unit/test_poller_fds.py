"""What kombu's event loop re-adds every tick (``Poller.fds``): not the sockets of
waiters whose BLMOVE is pending and which the loop already reads."""

from __future__ import annotations

from typing import Any

from snakepool.tasks.worker.pop_wait import Poller, Waiter


def _waiter(pending: bool) -> Waiter:
    waiter = object.__new__(Waiter)  # no channel needed to be told apart
    waiter._in_poll = object() if pending else None
    return waiter


class _Hub:
    def __init__(self, fds: list[int]) -> None:
        self.readers: dict[int, Any] = {fd: (print, (fd,)) for fd in fds}


def test_a_pending_waiter_the_loop_reads_is_not_re_added() -> None:
    poller = Poller()
    channel = object()
    poller._fd_to_chan.update({
        5: (_waiter(pending=True), "BRPOP"),
        6: (channel, "BRPOP"),
        7: (_waiter(pending=False), "BRPOP"),
        8: (channel, "LISTEN"),
    })  # fmt: skip
    assert set(poller.fds) == {5, 6, 7, 8}  # no loop yet: kombu's own
    poller.hub = _Hub([5, 6, 7, 8])
    assert set(poller.fds) == {6, 7, 8}
    poller.hub = _Hub([6, 7, 8])  # the loop dropped 5 (remove_reader): added again
    assert set(poller.fds) == {5, 6, 7, 8}
    poller._paused_brpop[6] = (channel, None, None, None)  # kombu's pause still applies
    assert set(poller.fds) == {5, 7, 8}
