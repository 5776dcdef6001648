"""The reliable pop's waiting side: one blocking ``BLMOVE`` per list, driven by kombu's
poller (why, and the take side: :mod:`~snakepool.tasks.worker.pop`).

A :class:`Waiter` looks to kombu's ``MultiChannelPoller`` like a channel with a pending
BRPOP (``client``, ``_in_poll``, ``_brpop_start``, ``handlers["BRPOP"]``), so the poller's
registration, event-loop hooks and disconnect handling serve it unchanged;
:class:`Poller` registers a channel's waiters while it waits, reads their replies (and
the take's) even without prefetch credit, and checks them for half-open connections.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis

if TYPE_CHECKING:
    from snakepool.tasks.worker.pop import ReliableChannel

__all__ = ["REFUSED_LOG_EVERY", "REFUSED_REST", "Poller", "Refusals", "Waiter"]

log = logging.getLogger("snakepool.broker")

#: Seconds a list Redis refused to pop from is left alone before the next try.
REFUSED_REST = 1.0
#: Seconds between two warnings about the same refused list.
REFUSED_LOG_EVERY = 60.0


class Refusals:
    """Lists Redis answers with an error instead of a message: at ``maxmemory`` with
    ``noeviction`` it refuses ``BLMOVE`` and the scripts (they write: ``OOM``), and a key
    that is not a list gives ``WRONGTYPE``. kombu raises such an error out of the worker's
    event loop — "Unrecoverable error": the node exits, every node of the lane alike.
    Here the list rests :data:`REFUSED_REST` seconds, a warning is logged at most every
    :data:`REFUSED_LOG_EVERY`, and the node goes on (serving its other lists) until
    Redis takes the command again."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._logged: dict[str, float] = {}

    def refused(self, key: str, error: redis.ResponseError) -> None:
        """Redis refused a command on ``key`` (a list; ``"take"``, ``"the reclaim"``)."""
        now = monotonic()
        self._until[key] = now + REFUSED_REST
        if now - self._logged.get(key, -REFUSED_LOG_EVERY) >= REFUSED_LOG_EVERY:
            self._logged[key] = now
            log.warning("Redis refused to move messages (%s, into the node's processing "
                        "list: %s); trying again every %g s", key, error, REFUSED_REST)  # fmt: skip

    def resting(self, key: str) -> bool:
        """Whether ``key`` was refused less than :data:`REFUSED_REST` seconds ago."""
        until = self._until.get(key)
        if until is None:
            return False
        if monotonic() < until:
            return True
        del self._until[key]
        return False


class Waiter:
    """One list's blocking move into the processing list, on a connection of its own.

    kombu's poller drives it like a channel's BRPOP (``client``, ``_in_poll``,
    ``_brpop_start``, ``handlers["BRPOP"]``); :class:`Poller` registers it while its
    channel waits.
    """

    #: The poller reads its replies even without prefetch credit (see ``Poller``).
    pops_reliably = True

    def __init__(self, channel: ReliableChannel, key: str) -> None:
        self.channel, self.key = channel, key
        self.client = channel._create_client(asynchronous=True)
        self.qos = channel.qos
        self._in_poll: Any = None
        self._brpop_sent_at: float | None = None
        self.handlers = {"BRPOP": self.read}

    def _brpop_start(self, timeout: float | None = None) -> None:
        channel = self.channel
        if not channel.blocking_wanted(self.key):
            return
        connection = self.client.connection
        self._in_poll, self._brpop_sent_at = connection, monotonic()
        timeout = channel.brpop_timeout if timeout is None else timeout
        # Shadow copies newest first: under overload the oldest are the ones trimmed.
        end = "LEFT" if channel.deferral.is_deferred(self.key) else "RIGHT"
        connection.send_command(
            "BLMOVE", self.key, channel.processing_list, end, "LEFT", timeout or 0
        )

    def read(self) -> bool:
        """Read the pending BLMOVE's reply: deliver its message, or give it back.

        Raises:
            Empty: it timed out, its message went back, or Redis refused the move or the
                message's ACCEPT (:class:`Refusals`; a reclaim puts back what it moved).
            redis.ConnectionError: the connection is gone (a reclaim follows).
        """
        channel = self.channel
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE")
            except channel.connection_errors:
                channel.reclaim_later()
                self.client.connection.disconnect()
                raise
            finally:
                self._in_poll = None
            if item is None or not channel.taken(self.key, item):
                raise kombu_redis.Empty()
        except redis.ResponseError as refused:  # the move, or its ACCEPT: see Refusals
            channel.refusals.refused(self.key, refused)
            raise kombu_redis.Empty() from None
        return True

    def _poll_error(self, type: str, **options: Any) -> None:
        self.read()


class Poller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """kombu's poller, also driving each reliable channel's waiters; a reliable pop's
    reply is read even without prefetch credit (a message given back is better than
    one held unseen)."""

    #: The worker's event loop (kombu's hub), set by the transport; None: none yet.
    hub: Any = None

    @property
    def fds(self) -> dict[int, Any]:
        """What kombu re-adds to its event loop on every tick: its own, but not the
        sockets of waiters whose ``BLMOVE`` is pending and which the loop already reads.

        kombu adds every registered socket again each tick (one ``epoll_ctl`` that fails
        with ``EEXIST``, and the hub's bookkeeping: on a ``--lane all`` node with four
        waiters, 5.9 ``epoll_ctl`` per request where 2.0 remain), which heals
        registrations its other paths dropped. A waiter's
        needs no healing: kombu's ``_register`` puts its socket in epoll, and the only path
        that takes it out, a lost connection, also clears its pending ``BLMOVE``
        (``ReliableChannel._on_connection_disconnect``), so it is offered again; a socket
        the loop dropped (``remove_reader``) is no longer among ``readers``.
        """
        fds: dict[int, Any] = super().fds
        readers = getattr(self.hub, "readers", None)
        if not readers:
            return fds
        return {
            fd: found for fd, found in fds.items()
            if not (fd in readers and isinstance(found[0], Waiter) and found[0]._in_poll)
        }  # fmt: skip

    def on_poll_start(self) -> None:
        super().on_poll_start()
        for channel in tuple(self._channels):
            for waiter in getattr(channel, "waiters_due", list)():
                self._register_BRPOP(waiter)

    def on_readable(self, fileno: int) -> Any:
        found = self._fd_to_chan.get(fileno)
        if found is not None and fileno not in self._paused_brpop:
            channel, kind = found
            if kind == "BRPOP" and getattr(channel, "pops_reliably", False):
                if channel._in_poll:
                    return channel.handlers["BRPOP"]()
                channel.client.connection.disconnect()  # the server closed an idle one
                return None
        return super().on_readable(fileno)

    def _pause_brpop(self, channel: Any, fileno: int) -> None:
        if not getattr(channel, "pops_reliably", False):
            super()._pause_brpop(channel, fileno)

    def maybe_check_brpop_health(self) -> None:
        super().maybe_check_brpop_health()
        now = monotonic()
        for channel in tuple(self._channels):
            for waiter in tuple(getattr(channel, "_waiters", {}).values()):
                connection, sent = waiter._in_poll, waiter._brpop_sent_at
                interval = channel.health_check_interval
                if not connection or sent is None or not interval:
                    continue
                if now - sent < (channel.brpop_timeout or 0) + interval:
                    continue
                sock = getattr(connection, "_sock", None)
                if sock is not None and not kombu_redis._socket_readable(sock):
                    log.warning("Redis BLMOVE on %s got no reply: dropping the connection",
                                waiter.key)  # fmt: skip
                    connection.disconnect()
