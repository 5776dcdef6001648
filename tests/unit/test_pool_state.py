"""The pool's state machine (PoolState) on its own: leasing, waiting, affinity, hand-over.

No processes: interpreters are stand-ins with the attributes the state machine reads.
A hypothesis state machine drives random sequences of pinned and unpinned leases,
releases, cancellations (a caller interrupted at any point), crashes, recycling and
replacements, and checks after every step that

* no waiter could be served by an idle interpreter,
* an interpreter that becomes idle goes to the FIRST waiter it may serve,
* idle + busy + starting == size,
* a waiter with an affinity key waits for exactly the interpreter that key is bound to.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from snakepool.errors import PoolUnavailable, QueueFull, QueueTimeout
from snakepool.pool.state import Phase, PoolState, Ticket
from snakepool.pool.worker import State

#: Few keys, so affinities collide: pinned waiters next to idle interpreters.
KEYS = st.sampled_from([None, "a", "a", "b"])


class StandIn:
    """What PoolState reads of an interpreter."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.pid = 10_000 + seq
        self.state = State.STARTING
        self.commands: dict[str, dict[str, bool]] = {"ping": {}}
        self.exit_status: int | None = None
        self.exited = threading.Event()
        self.retire_reason: str | None = None

    def __repr__(self) -> str:
        return f"<#{self.seq} {self.state.value}>"


def running_state(size: int, *, max_queue: int = 10) -> tuple[PoolState, list[StandIn]]:
    state = PoolState(max_queue=max_queue, queue_timeout=0.0)
    state.begin_start()
    members = [StandIn(seq) for seq in range(1, size + 1)]
    for member in members:
        state.add_starting(member)  # type: ignore[arg-type]
        state.admit(member)  # type: ignore[arg-type]
    state.set_phase(Phase.RUNNING)
    return state, members


def first_eligible(waiting_for: tuple[int | None, ...], seq: int) -> int | None:
    """Index of the first waiter an interpreter numbered ``seq`` may serve."""
    return next((i for i, w in enumerate(waiting_for) if w is None or w == seq), None)


class LeasingMachine(RuleBasedStateMachine):
    """Random leases / releases / interruptions / crashes against a model of the queue."""

    @initialize(size=st.integers(1, 3), max_queue=st.integers(2, 5))
    def start(self, size: int, max_queue: int) -> None:
        self.size = size
        self.max_queue = max_queue
        self.state, members = running_state(size, max_queue=max_queue)
        self.seqs = itertools.count(size + 1)
        self.held: list[tuple[Ticket, StandIn]] = []  # leases a caller is using
        self.queued: list[Ticket] = []  # the wait queue, in order
        self.starting: list[StandIn] = []
        self.members = members

    # ----------------------------------------------------------------- helpers

    def _collect_grants(self) -> None:
        """Move the tickets the state machine granted into ``held``."""
        for ticket in [t for t in self.queued if t.interpreter is not None]:
            assert ticket.event is not None and ticket.event.is_set()
            self.queued.remove(ticket)
            self.held.append((ticket, ticket.interpreter))  # type: ignore[arg-type]

    def _expect_offer(self, interpreter: StandIn, give_back: Callable[[], object]) -> None:
        """``give_back()`` makes ``interpreter`` available: it must go to the first
        waiter it may serve, or be parked idle."""
        before = self.state.snapshot()
        expected = first_eligible(before.waiting_for, interpreter.seq)
        give_back()
        if expected is None:
            assert interpreter.state is State.IDLE
            assert interpreter.seq in self.state.snapshot().idle_seqs
        else:
            winner = self.queued[expected]
            assert winner.interpreter is interpreter, "not the first eligible waiter"
        granted = [t for t in self.queued if t.interpreter is not None]
        assert len(granted) == (expected is not None)
        self._collect_grants()

    # ------------------------------------------------------------------- rules

    @rule(keys=st.lists(KEYS, min_size=1, max_size=4))
    def requests_arrive(self, keys: list[str | None]) -> None:
        """A burst of requests, pinned (affinity key) or not, one after the other."""
        for key in keys:
            self._lease(key)

    def _lease(self, key: str | None) -> None:
        before = self.state.snapshot()
        bound = self.state.affinity_of(key) if key is not None else None
        ticket = Ticket(key)
        try:
            got = self.state.request(ticket)
        except QueueFull:
            assert len(self.queued) == self.max_queue
            return
        if got is not None:
            if bound is not None:
                assert got is bound  # affinity: its own interpreter, nothing else
            assert got.seq in before.idle_seqs and got.state is State.BUSY
            self.held.append((ticket, got))  # type: ignore[arg-type]
        else:
            # It waits only if no idle interpreter may serve it.
            if bound is not None:
                assert bound.seq not in before.idle_seqs
            else:
                assert not before.idle_seqs
            self.queued.append(ticket)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.held:
            return
        _, interpreter = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self._expect_offer(interpreter, lambda: self.state.release(interpreter))

    @rule(data=st.data())
    def interrupted_after_grant(self, data: st.DataObject) -> None:
        """The caller dies between grant and use: cancel() hands the interpreter back."""
        if not self.held:
            return
        ticket, interpreter = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        assert self.state.cancel(ticket) is interpreter
        assert self.state.cancel(ticket) is None  # idempotent: never handed back twice
        self._expect_offer(interpreter, lambda: self.state.release(interpreter))

    @rule(data=st.data(), by_timeout=st.booleans())
    def waiter_gives_up(self, data: st.DataObject, by_timeout: bool) -> None:
        if not self.queued:
            return
        ticket = self.queued.pop(data.draw(st.integers(0, len(self.queued) - 1)))
        if by_timeout:
            with pytest.raises(QueueTimeout):
                self.state.collect(ticket)  # queue_timeout=0: nothing was granted
        else:
            assert self.state.cancel(ticket) is None
        assert self.state.snapshot().queued == len(self.queued)

    @rule(data=st.data(), planned=st.booleans())
    def loses_an_interpreter(self, data: st.DataObject, planned: bool) -> None:
        """A crash (or a recycling): out of service at once, a replacement starts."""
        snap = self.state.snapshot()
        candidates = [i for _, i in self.held] + [
            m for m in self._members() if m.seq in snap.idle_seqs
        ]
        if not candidates:
            return
        victim = data.draw(st.sampled_from(candidates))
        self.held = [(t, i) for t, i in self.held if i is not victim]
        if planned:
            assert self.state.retire(victim, "served enough")  # type: ignore[arg-type]
        else:
            assert self.state.discard(victim, "crashes")  # type: ignore[arg-type]
        assert not self.state.discard(victim, "crashes")  # type: ignore[arg-type]
        replacement = StandIn(next(self.seqs))
        self.state.add_starting(replacement)  # type: ignore[arg-type]
        self.starting.append(replacement)
        self._collect_grants()

    @rule()
    def replacement_ready(self) -> None:
        if not self.starting:
            return
        replacement = self.starting.pop(0)
        self.members.append(replacement)
        self._expect_offer(replacement, lambda: self.state.admit(replacement))  # type: ignore[arg-type]

    def _members(self) -> list[StandIn]:
        return [m for m in self.members if m.state not in (State.DEAD, State.RETIRING)]

    # -------------------------------------------------------------- invariants

    @invariant()
    def no_waiter_an_idle_interpreter_could_serve(self) -> None:
        snap = self.state.snapshot()
        for pinned_to in snap.waiting_for:
            assert pinned_to is not None or not snap.idle_seqs
            assert pinned_to not in snap.idle_seqs

    @invariant()
    def every_interpreter_is_counted_once(self) -> None:
        snap = self.state.snapshot()
        assert snap.idle + snap.busy + snap.starting == self.size
        assert snap.busy == len(self.held) and snap.queued == len(self.queued)
        assert snap.starting == len(self.starting)

    @invariant()
    def a_keyed_waiter_waits_for_its_keys_interpreter(self) -> None:
        for ticket in self.queued:
            assert ticket.interpreter is None
            if ticket.affinity is not None:
                assert ticket.wanted is self.state.affinity_of(ticket.affinity)


LeasingMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
test_leasing_state_machine = LeasingMachine.TestCase


# ----------------------------------------------------------- the reported inputs


def test_unpinned_request_takes_the_idle_interpreter_while_a_pinned_one_waits() -> None:
    """Issue 8.2: size 2, "s" bound to the busy #1 and waiting; an unpinned request
    must get the idle #2 at once, not queue behind it."""
    state, (one, two) = running_state(2)
    first = Ticket("s")
    assert state.request(first) in (one, two)
    busy = first.interpreter
    pinned = Ticket("s")
    assert state.request(pinned) is None and pinned.wanted is busy
    unpinned = Ticket()
    idle = two if busy is one else one
    assert state.request(unpinned) is idle
    assert state.snapshot().queued == 1
    state.release(busy)  # type: ignore[arg-type]
    assert pinned.interpreter is busy  # the pinned waiter gets its own interpreter


def test_released_interpreter_skips_waiters_pinned_elsewhere_fifo_among_the_rest() -> None:
    state, (one, two) = running_state(2)
    x_owner = state.request(Ticket("x"))
    y_owner = state.request(Ticket("y"))
    assert {x_owner, y_owner} == {one, two}
    queued = [Ticket("x"), Ticket(), Ticket("y"), Ticket()]
    for ticket in queued:
        assert state.request(ticket) is None
    state.release(y_owner)  # type: ignore[arg-type]
    # Not the pinned "x" at the head: the first waiter y_owner may serve.
    assert [t.interpreter for t in queued] == [None, y_owner, None, None]
    state.release(x_owner)  # type: ignore[arg-type]
    assert [t.interpreter for t in queued] == [x_owner, y_owner, None, None]
    state.release(x_owner)  # type: ignore[arg-type]
    assert queued[3].interpreter is x_owner  # "y" still waits for its own
    assert queued[2].interpreter is None and state.snapshot().waiting_for == (y_owner.seq,)


def test_waiters_of_a_lost_interpreter_take_an_idle_one_or_its_replacement() -> None:
    state, _ = running_state(2)
    first, second = Ticket("s"), Ticket()
    state.request(first)
    state.request(second)
    bound = first.interpreter
    waiter = Ticket("s")
    assert state.request(waiter) is None
    assert state.discard(bound, "crashes")  # type: ignore[arg-type]
    assert waiter.interpreter is None and waiter.wanted is None  # rebound to any
    replacement = StandIn(3)
    state.add_starting(replacement)  # type: ignore[arg-type]
    state.admit(replacement)  # type: ignore[arg-type]
    assert waiter.interpreter is replacement
    assert state.affinity_of("s") is replacement


def test_a_granted_ticket_is_never_lost_and_a_stopped_pool_fails_waiters() -> None:
    state, (only,) = running_state(1)
    held = Ticket()
    state.request(held)
    waiting = Ticket()
    assert state.request(waiting) is None
    state.release(only)  # type: ignore[arg-type]
    assert state.cancel(waiting) is only  # granted while its caller was interrupted
    assert state.release(only)  # type: ignore[arg-type]
    assert state.snapshot().idle == 1
    state.request(Ticket())
    late = Ticket()
    state.request(late)
    assert state.begin_stop() is Phase.RUNNING
    state.drain(deadline=0.0)
    assert isinstance(late.error, PoolUnavailable)
    with pytest.raises(PoolUnavailable):
        state.request(Ticket())


def test_an_exited_interpreter_is_never_parked_idle() -> None:
    state, (only,) = running_state(1)
    state.request(Ticket())
    assert state.mark_exited(only, -9) is State.BUSY  # type: ignore[arg-type]
    assert state.release(only) is False  # type: ignore[arg-type]
    assert state.snapshot().idle == 0
