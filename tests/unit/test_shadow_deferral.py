"""When a node takes shadow copies (``tasks/worker/pop_defer.py``): the deferral's rules
on a fake clock, and the loop wake-ups a settled message asks for."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.tasks.worker.pop_defer import (
    CALM_SECONDS,
    QUIET_SECONDS,
    STARVE_SECONDS,
    Deferral,
)

SUFFIX = "\x06\x169"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Hub:
    """kombu's Hub as the deferral uses it: call_soon (any thread) and call_later."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []
        self.later: list[float] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.later.append(delay)

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()


def _deferral(hub: Any = None) -> tuple[Deferral, Clock]:
    clock = Clock()
    return Deferral(SUFFIX, lambda: hub, clock), clock


def test_only_the_lists_of_the_shadow_priority_are_deferred() -> None:
    deferral, _ = _deferral()
    assert deferral.is_deferred("v2compat" + SUFFIX)
    assert not deferral.is_deferred("v2compat")
    assert not deferral.is_deferred("v2compat\x06\x163")


def test_copies_wait_while_a_live_message_runs_and_until_it_has_been_quiet() -> None:
    hub = Hub()
    deferral, clock = _deferral(hub)
    assert deferral.open()  # nothing in flight, nothing seen: an idle node takes copies
    deferral.taken("live-1", deferred=False)
    assert not deferral.open()
    clock.now += STARVE_SECONDS / 2
    assert not deferral.open()
    deferral.settled("live-1")
    assert not deferral.open()  # not yet quiet for QUIET_SECONDS
    assert len(hub.soon) == 1  # the loop is woken to look again once quiet
    hub.run_soon()
    assert hub.later == [QUIET_SECONDS]
    clock.now += QUIET_SECONDS
    assert deferral.open()


def test_after_live_traffic_copies_run_one_at_a_time_until_it_is_calm() -> None:
    deferral, clock = _deferral(Hub())
    deferral.taken("live", deferred=False)
    deferral.settled("live")
    clock.now += QUIET_SECONDS
    deferral.taken("copy-1", deferred=True)
    assert not deferral.open()  # one copy at a time while live traffic was just here
    clock.now += CALM_SECONDS
    assert deferral.open()  # calm: copies up to the prefetch room
    deferral.taken("copy-2", deferred=True)
    assert deferral.open()


def test_a_node_busy_with_live_traffic_still_takes_one_copy_per_starve_period() -> None:
    deferral, clock = _deferral(Hub())
    clock.now += 3 * STARVE_SECONDS  # idle for long: that is no reason to starve now
    for n in range(3):  # live messages overlap: never quiet
        deferral.taken(f"live-{n}", deferred=False)
        assert not deferral.open()
        clock.now += STARVE_SECONDS / 3
        if n:
            deferral.settled(f"live-{n - 1}")
    clock.now += 0.001
    assert deferral.open()  # closed for STARVE_SECONDS: one copy anyway
    deferral.taken("copy", deferred=True)
    assert not deferral.open()
    deferral.settled("copy")
    assert not deferral.open()  # the next one only after another period
    clock.now += STARVE_SECONDS
    assert deferral.open()


def test_a_node_taking_in_batches_probes_for_one_copy_per_starve_period() -> None:
    """Batches take the live lists first: when starving, one take is of copies only."""
    deferral, clock = _deferral(Hub())
    deferral.taken("live", deferred=False)
    assert not deferral.probe_due()  # not starving
    clock.now += STARVE_SECONDS
    assert deferral.probe_due()
    assert not deferral.probe_due()  # the next batches are live again
    clock.now += STARVE_SECONDS
    assert deferral.probe_due()  # that probe found no copy: try again a period later
    deferral.taken("copy", deferred=True)
    clock.now += STARVE_SECONDS
    assert not deferral.probe_due()  # a copy runs


def test_settling_an_unknown_or_a_live_message_among_others_wakes_nobody() -> None:
    hub = Hub()
    deferral, _ = _deferral(hub)
    deferral.settled("never-delivered")  # kombu's BRPOP delivered it, not the pop
    deferral.taken("a", deferred=False)
    deferral.taken("b", deferred=False)
    deferral.settled("a")
    assert hub.soon == []  # "b" still runs
    deferral.settled("b")
    assert len(hub.soon) == 1
    deferral.settled("b")  # settled twice (a reject after a failed ack): no second wake
    assert len(hub.soon) == 1


def test_without_an_event_loop_settling_wakes_nothing_and_raises_nothing() -> None:
    deferral, clock = _deferral(None)
    deferral.taken("live", deferred=False)
    deferral.settled("live")
    clock.now += QUIET_SECONDS
    assert deferral.open()  # the next poll (drain_events) sees it


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("live"), st.integers(0, 5)),
        st.tuples(st.just("copy"), st.integers(0, 5)),
        st.tuples(st.just("settle"), st.integers(0, 5)),
        st.tuples(st.just("wait"), st.sampled_from([0.001, 0.005, 0.01, 0.3, 1.0, 2.0])),
    ),
    max_size=60,
)


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_copies_never_run_beside_live_traffic_except_one_when_starving(
    events: list[tuple[str, Any]],
) -> None:
    """Whatever the order of deliveries, settlements and pauses: while a live message is
    in flight (or within QUIET_SECONDS of one) a copy is granted only when none runs and
    none was taken for STARVE_SECONDS; after live traffic, never two copies within
    CALM_SECONDS of it."""
    deferral, clock = _deferral(Hub())
    live: set[str] = set()
    copies: set[str] = set()
    quiet_since, live_at, copy_at, closed_at = (float("-inf"),) * 4
    for kind, value in events:
        if kind == "wait":
            clock.now += value
            continue
        if kind == "settle":
            tag = f"t{value}"
            deferral.settled(tag)
            if tag in live:
                live.discard(tag)
                if not live:
                    quiet_since = clock.now
            copies.discard(tag)
            continue
        tag = f"t{value}"
        if tag in live or tag in copies:
            continue  # delivery tags are unique while in flight
        granted = deferral.open()
        busy = bool(live) or clock.now - quiet_since < QUIET_SECONDS
        starving = not copies and clock.now - max(copy_at, closed_at) >= STARVE_SECONDS
        if busy:
            assert granted == starving
        else:
            assert granted == (not copies or clock.now - live_at >= CALM_SECONDS)
        if kind == "copy" and granted:
            deferral.taken(tag, deferred=True)
            copies.add(tag)
            copy_at = clock.now
        elif kind == "live":
            if not busy:
                closed_at = clock.now
            deferral.taken(tag, deferred=False)
            live.add(tag)
            live_at = clock.now


def test_an_ack_on_the_event_loop_sets_the_timer_in_that_tick_and_one_elsewhere_wakes_it() -> None:
    """Celery acks on its event loop: a call_soon from there would wait for the poll's
    timeout (up to a second) before the lists are offered again."""
    on_loop = Hub()
    on_loop._loop_thread = threading.get_ident()  # type: ignore[attr-defined]
    deferral, _ = _deferral(on_loop)
    deferral.taken("live", deferred=False)
    deferral.settled("live")
    assert (on_loop.soon, on_loop.later) == ([], [QUIET_SECONDS])

    elsewhere = Hub()
    elsewhere._loop_thread = -1  # type: ignore[attr-defined]
    deferral, _ = _deferral(elsewhere)
    deferral.taken("live", deferred=False)
    deferral.settled("live")
    assert (len(elsewhere.soon), elsewhere.later) == (1, [])
    elsewhere.run_soon()
    assert elsewhere.later == [QUIET_SECONDS]


@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_a_live_message_whose_ack_fails_still_settles_in_the_deferral(
    settle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ack or reject that raises (Redis away, a READONLY replica after a failover)
    still ends the message's run here: left among the live ones, it kept the lists of
    copies closed for the channel's whole life (one copy per STARVE_SECONDS at best)."""
    import redis
    from kombu.transport import redis as kombu_redis

    from snakepool.tasks.worker.broker import QoS

    def fail(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("Redis away")

    monkeypatch.setattr(kombu_redis.QoS, settle, fail)
    deferral, clock = _deferral()

    class Channel:
        do_restore = False  # kombu's finalizer reads it when the QoS is collected

    channel = Channel()
    channel.deferral = deferral  # type: ignore[attr-defined]
    qos = QoS(channel, prefetch_count=2)
    deferral.taken("live-1", deferred=False)
    assert not deferral.open()
    with pytest.raises(redis.ConnectionError):
        getattr(qos, settle)("live-1")
    clock.now += QUIET_SECONDS
    assert deferral.open()
