"""Shadow copies yield to live traffic: the reliable pop's deferred lists.

A shadow copy (:mod:`~snakepool.tasks.rollout.shadow`) of a request outside a session
is published with priority :data:`SHADOW_PRIORITY`, so kombu's Redis transport puts it
on its lane queue's low-priority list ``<queue>\\x06\\x169`` (``priority_steps = [0,
9]``, set by ``create_app``): still the lane's queue for kombu, Celery, recovery and
purges, but a list of its own. A node takes from those *deferred* lists only when live
traffic leaves room (issue 10: "shadow on at rate 1.0: primary latency within +5 %"; when the
copy ran beside its primary in the same node, the primary took 1.5 times as long, most
of it the copy's receipt alone):

- **quiet**: no message of a normal list in flight on the channel, and none for
  :data:`QUIET_SECONDS`; then copies run, one at a time while live traffic was seen
  in the last :data:`CALM_SECONDS`, up to the prefetch room after that (a node that
  only gets copies, say V2-compat at 100 % V3, runs them at full concurrency);
- **starving**: live traffic kept the lists closed for :data:`STARVE_SECONDS` (since
  they were last open or a copy was last taken): one copy is taken anyway (by a waiter,
  or, on a node taking in batches, live lists first, by a take of copies only), so a
  busy node still makes progress (at least one copy per ``STARVE_SECONDS``). Every node
  trims both lanes' lists to :data:`BACKLOG_CAP` every :data:`TRIM_SECONDS`, oldest
  first (logged, and counted as ``dropped`` in the shadow counts).

Copies are taken newest first (``BLMOVE … LEFT``; one given back goes back there too):
under overload the oldest are trimmed, and a copy older than its primary's pair record
(``rollout.shadow.PAIR_TTL``, 300 s) could no longer be compared anyway: it expires
then, discarded unrun and counted (``dispatch.py``). A copy of a request in a session is
not deferred: run after the session's next write it would see that write and report a
false mismatch, so it goes at live priority (``dispatch.py``).

A copy that a pending ``BLMOVE`` brings while the lists are closed is given back to its
list's newest end, the next taken. When no live message is left in flight, the last one's ack arms a
timer of ``QUIET_SECONDS`` on the event loop (directly when Celery acks on the loop, as
it does; else through kombu's thread-safe ``Hub.call_soon``), whose expiry is a tick
that offers the lists again; nothing here runs on a request's own path but two set
operations.

Priority 9 on snakepool's queues is the shadow copies': a message published with it by
other means (a plain Celery ``send_task(..., priority=9)``) is deferred, and trimmed,
like one.

Limits: deferral needs the reliable pop (``redis://``, Redis ≥ 6.2); with kombu's BRPOP
(and in the embedded demo's in-memory transport) copies are consumed in priority order
like any message. A node of a version before this one does not read the deferred lists:
during a rolling deploy, copies wait there for a node of this version; every node of this
version, whatever its lanes, caps both lanes' lists (``recovery/step.py``), so a deploy
stopped half way leaves a bounded list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

import redis

__all__ = [
    "BACKLOG_CAP",
    "CALM_SECONDS",
    "QUIET_SECONDS",
    "SHADOW_PRIORITY",
    "STARVE_SECONDS",
    "TRIM_SECONDS",
    "Deferral",
    "deferred_list",
    "trim_lists",
]

log = logging.getLogger("snakepool.broker")

#: kombu's Redis priorities run 0 (first) to 9 (last): shadow copies go last.
SHADOW_PRIORITY = 9
#: Seconds without a live message in flight before copies are taken.
QUIET_SECONDS = 0.01
#: Seconds after the last live message during which copies run one at a time.
CALM_SECONDS = 1.0
#: Longest a busy node goes without taking a copy, in seconds.
STARVE_SECONDS = 1.0
#: Copies kept per deferred list (trimmed, oldest first, by every node every TRIM_SECONDS).
BACKLOG_CAP = 10_000
TRIM_SECONDS = 10.0

#: kombu's Redis transport names a queue's list of priority P ``<queue><sep><P>``.
KOMBU_PRIORITY_SEP = "\x06\x16"


def deferred_list(queue: str) -> str:
    """The Redis list holding ``queue``'s shadow copies (``v2compat`` →
    ``v2compat\x06\x169``)."""
    return f"{queue}{KOMBU_PRIORITY_SEP}{SHADOW_PRIORITY}"


#: Keep the newest ARGV[1] of KEYS[1] (kombu pushes on the left); returns how many were
#: dropped.
TRIM = """
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if over <= 0 then return 0 end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
return over
"""


class Deferral:
    """When one channel may take from its deferred lists (the module docstring).

    Args:
        suffix: The end of a deferred list's name (kombu's separator + the priority).
        hub: Returns the worker's event loop (kombu's ``Hub``), None while there is none.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        suffix: str,
        hub: Callable[[], Any],
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.suffix = suffix
        self._hub = hub
        self._clock = clock
        self._live: set[str] = set()  # delivery tags of live messages not yet settled
        self._copies: set[str] = set()
        self._quiet_since = float("-inf")
        self._live_at = float("-inf")  # when a live message was last taken
        self._copy_at = float("-inf")  # when a copy was last taken
        self._closed_at = float("-inf")  # when live traffic last closed the lists
        self._probed_at = float("-inf")

    def is_deferred(self, key: str) -> bool:
        """Whether ``key`` (a Redis list the channel consumes) is a deferred list."""
        return key.endswith(self.suffix)

    def open(self) -> bool:
        """Whether copies may be taken now (no state changes: ask as often as needed)."""
        now = self._clock()
        if self._live or now - self._quiet_since < QUIET_SECONDS:
            return self.starving(now)
        return not (self._copies and now - self._live_at < CALM_SECONDS)

    def starving(self, now: float) -> bool:
        """Whether live traffic has kept the lists closed for ``STARVE_SECONDS`` since
        they were last open or a copy was last taken (and no copy runs)."""
        since = max(self._copy_at, self._closed_at)
        return not self._copies and now - since >= STARVE_SECONDS

    def probe_due(self) -> bool:
        """Whether a node taking in batches (several lists busy, little prefetch room:
        live lists first) is to take one copy now: starving, and not probed for
        ``STARVE_SECONDS``; True marks it probed."""
        now = self._clock()
        if not self.starving(now) or now - self._probed_at < STARVE_SECONDS:
            return False
        self._probed_at = now
        return True

    def taken(self, delivery_tag: str, *, deferred: bool) -> None:
        """A message was delivered (event-loop thread)."""
        now = self._clock()
        if deferred:
            self._copies.add(delivery_tag)
            self._copy_at = now
        else:
            if not self._live and now - self._quiet_since >= QUIET_SECONDS:
                self._closed_at = now  # the lists were open until this message
            self._live.add(delivery_tag)
            self._live_at = now

    def settled(self, delivery_tag: str) -> None:
        """A message was acknowledged or rejected (any thread). The last live one wakes
        the loop so that it can open the lists once quiet; a copy, to take the next."""
        if delivery_tag in self._live:
            self._live.discard(delivery_tag)
            if self._live:
                return
            self._quiet_since = self._clock()
        elif delivery_tag in self._copies:
            self._copies.discard(delivery_tag)
        else:
            return
        hub = self._hub()
        if hub is None:
            return
        if getattr(hub, "_loop_thread", None) == threading.get_ident():
            # Celery runs acks on its event loop: a timer set now counts in this very
            # tick's poll timeout (a call_soon would wait for the poll to end).
            self._recheck_later()
        else:
            hub.call_soon(self._recheck_later)  # thread-safe: wakes the loop

    def _recheck_later(self) -> None:
        # Event-loop thread: the timer's expiry is a tick, which offers the lists again.
        hub = self._hub()
        if hub is not None:
            hub.call_later(QUIET_SECONDS, _tick)


def trim_lists(client: Any, keys: list[str]) -> int:
    """Trim each deferred list of ``keys`` to :data:`BACKLOG_CAP` (oldest first); how
    many copies went (logged). A key Redis refuses (not a list) is logged and skipped.

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis is away.
    """
    dropped = 0
    for key in keys:
        try:
            over = int(client.eval(TRIM, 1, key, BACKLOG_CAP))
        except redis.ResponseError as exc:
            log.error("cannot trim the shadow copies at %r: %s", key, exc)
            continue
        if over:
            log.warning("%d shadow copies dropped from %r: over %d waiting (nodes too busy "
                        "to run them, or none of this version)", over, key,
                        BACKLOG_CAP)  # fmt: skip
        dropped += over
    return dropped


def _tick() -> None:
    """A timer's expiry: the loop ticks, and the poller offers the lists again."""
