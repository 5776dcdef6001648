"""The pool's one state machine: who is in service, who is idle, who waits for whom.

Every transition of an interpreter in service, every queue operation and every counter
happens here, under one lock. The :class:`~snakepool.pool.pool.Pool` (requests) and the
:class:`~snakepool.pool.supervisor.Supervisor` (starting, checking, replacing) call the
public methods only; neither touches the data.

::

                admit()                request()
    STARTING ─────────────► IDLE ──────────────────────► BUSY   (leased by a caller)
       │                    ▲  │ take_idle_for_check()     │
       │                    │  ▼                           │
       │                    │  CHECKING (health ping)      │
       │                    │  │ release()                 │ release()
       │                    │  ▼                           ▼
       │                    └── offer: to the FIRST waiter it may serve (→ BUSY),
       │                               else park (→ IDLE); admit() offers too
       ▼ mark_dead()
     DEAD ◄── discard() ── IDLE | BUSY | CHECKING ── retire() ──► RETIRING ──► exits on EOF

    waiters, FIFO, ≤ max_queue:  [pinned→#2] [any] [pinned→#1] [any] ...
      an interpreter becoming idle (release, admit) goes to the FIRST waiter it may
      serve; one leaving service (discard, retire) unpins its waiters: they take any.

Invariants (the property tests check them through :meth:`PoolState.snapshot`):

* never a waiter that an idle interpreter may serve — unpinned waiters take any idle
  interpreter, pinned ones (affinity) only their own;
* first come, first served among the waiters an interpreter may serve;
* each interpreter in service is exactly one of starting, idle, busy or checking.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from snakepool import errors
from snakepool.pool.affinity import Affinity
from snakepool.pool.phase import Phase
from snakepool.pool.queue import Ticket, WaitQueue
from snakepool.pool.snapshot import Snapshot
from snakepool.pool.worker import Interpreter, State

__all__ = ["COUNTERS", "LATENCY_WINDOW", "Phase", "PoolState", "Ticket"]

#: Recent request latencies kept for the p50/p99 in the snapshot.
LATENCY_WINDOW = 2048
#: The event counters of :meth:`Pool.stats <snakepool.pool.pool.Pool.stats>`.
COUNTERS = ("requests", "errors", "crashes", "timeouts", "recycled", "restarts", "health_checks")


class PoolState:
    """The members, idle set, waiters, affinity, counters and phase of one pool.

    Args:
        max_queue: Waiters allowed at once (``MAX_QUEUE``); past it, ``QueueFull``.
        queue_timeout: Seconds a waiter waits (``QUEUE_TIMEOUT``); then ``QueueTimeout``.
    """

    def __init__(self, *, max_queue: int, queue_timeout: float) -> None:
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._phase = Phase.NEW
        self._starting: dict[int, Interpreter] = {}
        self._members: dict[int, Interpreter] = {}  # admitted and not yet out of service
        self._idle: deque[Interpreter] = deque()
        self._waiters = WaitQueue()
        self._affinity = Affinity()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._unavailable: errors.PoolUnavailable | None = None

    # ------------------------------------------------------------------ phase

    @property
    def phase(self) -> Phase:
        """Where the pool is in its life."""
        return self._phase

    def begin_start(self) -> None:
        """NEW → STARTING. Raises ``PoolUnavailable`` if the pool was started before."""
        with self._lock:
            if self._phase is not Phase.NEW:
                raise errors.PoolUnavailable(f"pool already {self._phase.value}")
            self._phase = Phase.STARTING

    def set_phase(self, phase: Phase) -> None:
        """Move to ``phase`` (RUNNING after a start; STOPPED at the end)."""
        with self._lock:
            self._phase = phase
            if phase is Phase.STOPPED:
                self._idle.clear()
                self._members.clear()
                self._starting.clear()

    def begin_drain(self) -> None:
        """RUNNING → DRAINING: refuse new requests and fail every queued one with
        ``PoolUnavailable`` at once (none of them started); those running carry on."""
        with self._lock:
            if self._phase is Phase.RUNNING:
                self._phase = Phase.DRAINING
            self._refuse_waiters()

    def begin_stop(self) -> Phase:
        """Refuse new requests, fail the queued ones (``PoolUnavailable``) at once; return
        the phase the pool was in (a pool never started is STOPPED at once)."""
        with self._lock:
            previous = self._phase
            if previous is Phase.NEW:
                self._phase = Phase.STOPPED
            elif previous not in (Phase.STOPPING, Phase.STOPPED):
                self._phase = Phase.STOPPING
            self._refuse_waiters()
            return previous

    def drain(self, deadline: float) -> None:
        """Wait (until ``deadline``, monotonic) for the busy ones to finish (nobody is
        queued: :meth:`begin_stop` failed the queue)."""
        with self._lock:
            while any(m.state is State.BUSY for m in self._members.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)

    def _refuse_waiters(self) -> None:
        """Fail the queue (lock held): a waiter must not sit out its ``queue_timeout``."""
        why = f"the pool is {self._phase.value}: the request was queued, not started"
        self._waiters.fail_all(errors.PoolUnavailable(why))

    # ------------------------------------------------- membership (the supervisor)

    def add_starting(self, interpreter: Interpreter) -> None:
        """An interpreter was spawned; it is STARTING until :meth:`admit`."""
        with self._lock:
            self._starting[interpreter.seq] = interpreter

    def starting_interpreters(self) -> list[Interpreter]:
        """The interpreters spawned and not yet ready."""
        with self._lock:
            return list(self._starting.values())

    def mark_dead(self, interpreter: Interpreter) -> None:
        """DEAD: a STARTING interpreter that will never be ready, or any interpreter
        that exits while the pool stops (nothing is leased then)."""
        with self._lock:
            self._starting.pop(interpreter.seq, None)
            interpreter.state = State.DEAD

    def admit(self, interpreter: Interpreter) -> int:
        """A STARTING interpreter passed its handshake: serve the first waiter it may
        serve, or park it idle. Returns the number of interpreters in service."""
        with self._lock:
            self._starting.pop(interpreter.seq, None)
            self._members[interpreter.seq] = interpreter
            self._unavailable = None
            if self._phase in (Phase.DRAINING, Phase.STOPPING, Phase.STOPPED):
                self._park(interpreter)
            else:
                self._offer(interpreter)
            return len(self._members)

    def in_service(self) -> int:
        """Interpreters admitted or starting (what reconciliation compares to the size)."""
        with self._lock:
            return len(self._members) + len(self._starting)

    def mark_exited(self, interpreter: Interpreter, status: int | None) -> State:
        """Record that the process ended; return its state at that moment. Atomic with
        :meth:`release`, so a dead interpreter is never parked idle: either the caller
        sees the exit, or the supervisor sees it idle (and either replaces it)."""
        with self._lock:
            interpreter.exit_status = status
            interpreter.exited.set()
            return interpreter.state

    def discard(self, interpreter: Interpreter, counter: str) -> bool:
        """Take a broken interpreter out of service (DEAD) and count it under ``counter``
        (``crashes`` or ``timeouts``). False if it was out of service already."""
        return self._leave(interpreter, State.DEAD, counter)

    def retire(self, interpreter: Interpreter, reason: str) -> bool:
        """Take an interpreter out of service on purpose (RETIRING, counted as recycled).
        False if it was out of service already."""
        return self._leave(interpreter, State.RETIRING, "recycled", reason)

    def _leave(
        self, interpreter: Interpreter, state: State, counter: str, reason: str | None = None
    ) -> bool:
        """Take an interpreter out of service (→ ``state``); False if already out."""
        with self._lock:
            if interpreter.state in (State.DEAD, State.RETIRING):
                return False
            interpreter.retire_reason = reason
            if interpreter.state is State.IDLE:
                self._idle.remove(interpreter)
            self._members.pop(interpreter.seq, None)
            interpreter.state = state
            self._counts[counter] += 1
            # Its waiters are rebound: they take any interpreter now, an idle one at once
            # (FIFO among them), else the next released or admitted one (its replacement).
            self._waiters.unpin(interpreter)
            while self._idle and self._waiters.has_unpinned():
                self._offer(self._idle.pop())
            self._changed.notify_all()
            return True

    def idle_interpreters(self) -> list[Interpreter]:
        """The idle interpreters, most recently used last."""
        with self._lock:
            return list(self._idle)

    def take_idle_for_check(self, interpreter: Interpreter) -> bool:
        """Lease an idle interpreter for a health ping (CHECKING); never waits."""
        with self._lock:
            if interpreter.state is not State.IDLE or self._phase is not Phase.RUNNING:
                return False
            self._idle.remove(interpreter)
            interpreter.state = State.CHECKING
            return True

    def set_unavailable(self, error: errors.PoolUnavailable | None) -> None:
        """Backing off (or not): with nothing left serving, waiters get ``error`` now."""
        with self._lock:
            self._unavailable = error
            if error is not None and not self._members:
                self._waiters.fail_all(error)

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one of :data:`COUNTERS`."""
        with self._lock:
            self._counts[counter] += n

    # ----------------------------------------------------------- requests (callers)

    def request(self, ticket: Ticket) -> Interpreter | None:
        """Grant ``ticket`` an interpreter now (BUSY, returned) or queue it (None).

        Raises:
            PoolUnavailable: not running, or backing off with nothing left serving.
            QueueFull: ``max_queue`` waiters already.
        """
        with self._lock:
            if self._phase is not Phase.RUNNING:
                raise errors.PoolUnavailable(f"the pool is {self._phase.value}")
            wanted = ticket.wanted = self._bound(ticket.affinity)
            # By the invariant no waiter may be served by an idle interpreter, so taking
            # one here never jumps the queue.
            if wanted is not None and wanted.state is State.IDLE:
                self._idle.remove(wanted)
                self._grant(ticket, wanted)
                return wanted
            if wanted is None and self._idle:
                interpreter = self._idle.pop()  # most recently used: warmest caches
                self._grant(ticket, interpreter)
                return interpreter
            if self._unavailable is not None and not self._members:
                raise self._unavailable
            if len(self._waiters) >= self.max_queue:
                raise errors.QueueFull(
                    f"all {len(self._members)} interpreters busy and "
                    f"{len(self._waiters)} requests queued (max_queue={self.max_queue})",
                    queued=len(self._waiters),
                    max_queue=self.max_queue,
                )
            self._waiters.append(ticket)
            return None

    def lease(self, ticket: Ticket) -> Interpreter:
        """:meth:`request`, then :meth:`collect` if queued (same errors)."""
        return self.request(ticket) or self.collect(ticket)

    def collect(self, ticket: Ticket) -> Interpreter:
        """Wait up to ``queue_timeout`` for the interpreter granted to a queued ``ticket``.

        A caller that does not get to use what was granted (any exception, even a
        KeyboardInterrupt mid-way) must :meth:`cancel` the ticket and give back the
        interpreter that returns.

        Raises:
            QueueTimeout: nothing was granted in time.
            PoolUnavailable: the pool stopped, or is backing off with nothing serving.
        """
        assert ticket.event is not None
        ticket.event.wait(self.queue_timeout)
        with self._lock:
            if ticket.interpreter is not None:
                return ticket.interpreter
            if ticket.error is not None:
                raise ticket.error
            self._waiters.remove(ticket)
        raise errors.QueueTimeout(
            f"no interpreter became free within queue_timeout={self.queue_timeout:g}s",
            queue_timeout=self.queue_timeout,
        )

    def cancel(self, ticket: Ticket) -> Interpreter | None:
        """Give up ``ticket``: leave the queue, or take back the interpreter granted to it
        (still BUSY: the caller releases it). Idempotent."""
        with self._lock:
            interpreter, ticket.interpreter = ticket.interpreter, None
            if interpreter is None:
                self._waiters.remove(ticket)  # unless it is gone already (timed out, failed)
            return interpreter

    def release(self, interpreter: Interpreter, *, seconds: float | None = None) -> bool:
        """A lease (request or health ping) ended well: hand the interpreter to the first
        waiter it may serve, or park it idle. False if its process has exited: the
        caller must :meth:`discard` it instead. ``seconds``: also count a request done."""
        with self._lock:
            if seconds is not None:
                self._counts["requests"] += 1
                self._latencies.append(seconds)
            if interpreter.state in (State.DEAD, State.RETIRING):
                return True  # already out of service; nothing to give back
            if interpreter.exited.is_set():
                return False
            self._offer(interpreter)
            return True

    def record_request(self, seconds: float, *, failed: bool) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            self._counts["requests"] += 1
            self._counts["errors"] += failed
            self._latencies.append(seconds)

    # --------------------------------------------------------------- inspection

    def affinity_of(self, key: str) -> Interpreter | None:
        """The live interpreter ``key`` is bound to, if any."""
        with self._lock:
            return self._bound(key)

    def commands(self) -> dict[str, dict[str, bool]]:
        """The commands announced by an interpreter in service (empty if none)."""
        with self._lock:
            for member in self._members.values():
                if member.commands:
                    return dict(member.commands)
        return {}

    def snapshot(self) -> Snapshot:
        """A consistent copy of everything, for stats and invariant checks."""
        with self._lock:
            states = [m.state for m in self._members.values()]
            return Snapshot(
                phase=self._phase.value,
                starting=len(self._starting),
                idle=states.count(State.IDLE),
                busy=states.count(State.BUSY) + states.count(State.CHECKING),
                queued=len(self._waiters),
                counts=dict(self._counts),
                latencies=sorted(self._latencies),
                unavailable=self._unavailable.message if self._unavailable else None,
                pids=sorted(m.pid for m in self._members.values() if m.pid is not None),
                idle_seqs=tuple(m.seq for m in self._idle),
                waiting_for=self._waiters.pinned_to(),
            )

    # ------------------------------------------------------ internals (lock held)

    def _offer(self, interpreter: Interpreter) -> None:
        """Grant ``interpreter`` to the first waiter it may serve, or park it idle."""
        ticket = self._waiters.take_for(interpreter)
        if ticket is None:
            self._park(interpreter)
        else:
            self._grant(ticket, interpreter)
            assert ticket.event is not None
            ticket.event.set()
        if self._phase in (Phase.DRAINING, Phase.STOPPING):
            self._changed.notify_all()  # drain() waits for the last busy interpreter

    def _grant(self, ticket: Ticket, interpreter: Interpreter) -> None:
        interpreter.state = State.BUSY
        ticket.interpreter = interpreter
        self._bind(ticket.affinity, interpreter)

    def _park(self, interpreter: Interpreter) -> None:
        interpreter.state = State.IDLE
        self._idle.append(interpreter)
        if self._phase is not Phase.RUNNING:  # only drain() waits (a cost per request)
            self._changed.notify_all()

    def _bound(self, affinity: str | None) -> Interpreter | None:
        """The interpreter in service ``affinity`` is bound to."""
        if affinity is None:
            return None
        seq = self._affinity.seq_of(affinity)
        return self._members.get(seq) if seq is not None else None

    def _bind(self, affinity: str | None, interpreter: Interpreter) -> None:
        if affinity is not None and self._affinity.bind(affinity, interpreter.seq):
            self._waiters.pin(affinity, interpreter)
