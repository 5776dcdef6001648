"""The pool: N warm interpreters, one request at a time each, a bounded FIFO for the rest.

::

    caller thread                            PoolState (one lock)          Supervisor thread
    ─────────────                            ────────────────────          ─────────────────
    execute(cmd, args)
      encode_request() ─ unsendable? ─► InvalidArguments   (nothing leased)
      lease(Ticket) ─► request() ─ an idle one it may take? ─► BUSY ─┐      template: spawn/exit
                          │ no                                       │      ready → admit()
                          └► ticket in the FIFO (≤ max_queue) ◄──────┼─ offer on release/admit
                             collect(): wait ≤ queue_timeout         │      health pings
      call_framed(): frame ─► pipe ─► interpreter ─► reply ◄─────────┘      output → logging
          │ ok / command error ─► supervisor.release()  idle, next waiter, or recycled
          │ timeout / crash ────► supervisor.discard()  killed; replaced (restart intensity)
          └ anything else ──────► _abandon()            ticket cancelled / interpreter retired

The caller's own thread does the pipe I/O, so the hot path is a lock, a write, a poll
and a read. Everything slow or asynchronous (starting interpreters, noticing deaths,
health checks, draining output) happens in the :class:`~snakepool.pool.supervisor.Supervisor`.
Who is idle, busy or waiting is kept by :class:`~snakepool.pool.state.PoolState` alone.
Whatever happens between lease and release — a command error, a crash, a timeout, an
exception of the caller's own such as ``KeyboardInterrupt`` — the leased interpreter is
given back or replaced: the pool never loses capacity to an error path.

A pool belongs to the process that started it (:mod:`~snakepool.pool.ownership`): in a
forked child every request is ``PoolUnavailable`` (saying why), ``start`` too, and
``stop`` leaves the parent's interpreters alone; the child starts a pool of its own.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from snakepool import errors
from snakepool.config.settings import PoolSettings, load_pool_settings
from snakepool.config.timeouts import checked_timeout
from snakepool.pool.environment import interpreter_env
from snakepool.pool.hooks import PoolObserver
from snakepool.pool.ownership import Ownership
from snakepool.pool.queue import Ticket
from snakepool.pool.registry import ProcessRegistry, default_registry_dir
from snakepool.pool.request import check_scope, encode_request
from snakepool.pool.state import Phase, PoolState
from snakepool.pool.supervisor import Supervisor
from snakepool.pool.worker import Broken, Interpreter

if TYPE_CHECKING:
    from snakepool.config.settings import Settings

__all__ = ["Pool"]

log = logging.getLogger("snakepool.pool")


class Pool:
    """A pool of persistent Python interpreters.

    Every keyword is a pool setting (DESIGN.md §3) in lower case, validated like the
    environment settings; ``size`` is ``POOL_SIZE``. Unset keywords take the defaults
    of :class:`snakepool.config.settings.PoolSettings` (not the environment: use
    :meth:`from_settings` for that).

    Example::

        with Pool(size=4) as pool:
            pool.execute("calculate", {"expression": "2 + 3 * 4"})  # {"result": 14}

    Raises:
        ConfigError: a setting is invalid (names the setting and the allowed range).
    """

    def __init__(
        self,
        *,
        observer: PoolObserver | None = None,
        env: dict[str, str] | None = None,
        preload: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        if "size" in settings:
            settings["pool_size"] = settings.pop("size")
        self.settings: PoolSettings = load_pool_settings(**settings)
        self.observer = observer or PoolObserver()
        # Calling a hook nobody overrode costs a few % of a ping: skip it.
        self._observes_requests = type(self.observer).on_request is not PoolObserver.on_request
        self.run_id = uuid.uuid4().hex[:16]
        self._owner = Ownership()  # the process that started it
        self._env = env
        # Request ids are the pool's, not an interpreter's: a request is encoded (and
        # rejected if it cannot be) before any interpreter is leased.
        self._request_ids = itertools.count(1)
        self._state = PoolState(
            max_queue=self.settings.max_queue, queue_timeout=self.settings.queue_timeout
        )
        registry_dir = self.settings.registry_dir or default_registry_dir()
        self.registry = ProcessRegistry(Path(registry_dir))
        self._supervisor = Supervisor(
            settings=self.settings,
            state=self._state,
            run_id=self.run_id,
            registry=self.registry,
            observer=self.observer,
            env=self.child_env,
            preload=preload,
        )

    @classmethod
    def from_settings(cls, settings: Settings | PoolSettings, **overrides: Any) -> Pool:
        """A pool configured from a settings object (e.g. ``config.load_settings()``)."""
        values = {name: getattr(settings, name) for name in PoolSettings.model_fields}
        values.update(overrides)
        return cls(**values)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start every interpreter concurrently; return when all are ready.

        Raises:
            ConfigError: the adapter cannot be loaded, or the Python is unusable.
            PoolUnavailable: interpreters did not become ready within the startup timeout,
                or this is a forked child of the process that started the pool.
        """
        self._owner.claim()
        self._state.begin_start()
        killed = self.registry.sweep()
        if killed:
            log.warning("killed %d leftover process(es) of dead runs: %s", len(killed), killed)
        try:
            self._supervisor.start(self.settings.pool_size)
        except BaseException:
            self._supervisor.stop(grace=0)
            self._state.set_phase(Phase.STOPPED)
            raise
        self._state.set_phase(Phase.RUNNING)

    def begin_drain(self) -> None:
        """Refuse new requests and fail the queued ones with ``PoolUnavailable`` at once
        (none of them started); requests running finish. :meth:`stop` comes next.

        What a node's warm shutdown calls first: a request still waiting for an
        interpreter goes back to the broker for another node instead of starting here.
        """
        if not self._owner.elsewhere:
            self._state.begin_drain()

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight work for up to ``grace`` seconds, then stop.

        New requests are refused from the start, and requests queued for an interpreter
        get ``PoolUnavailable`` at once (they never started). No process is left behind.

        In a forked child of the process that started the pool it does nothing: the
        interpreters are the parent's, and so is stopping them.
        """
        if self._owner.elsewhere:
            return
        deadline = time.monotonic() + grace
        previous = self._state.begin_stop()
        if previous in (Phase.STOPPING, Phase.STOPPED):
            return
        if previous is Phase.NEW:
            self._supervisor.stop(grace=0)  # gives back its fds; starts nothing
            return
        self._state.drain(deadline)
        self._supervisor.stop(grace=max(0.0, deadline - time.monotonic()))
        self._state.set_phase(Phase.STOPPED)
        self.registry.forget_run(self.run_id)

    def __enter__(self) -> Self:
        if self._state.phase is Phase.NEW:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------- requests

    def execute(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        affinity: str | None = None,
        session: str | None = None,
        transient: bool = False,
    ) -> Any:
        """Run ``command`` on an idle interpreter and return its (JSON-able) result.

        Args:
            command: Command name of the adapter.
            args: Its arguments (a dict with str keys of JSON-like values; None means
                ``{}``), checked and encoded before an interpreter is leased.
            timeout: Seconds the command may run (a number above 0 and at most 86400);
                default ``request_timeout``.
            affinity: Requests with the same key run on the same interpreter (waiting
                for it when busy) for as long as it lives; then the key moves to another.
            session: The session the request belongs to; commands that keep state in
                the interpreter key it by this, so sessions sharing one never meet.
            transient: The request must leave no state in the interpreter (a shadow
                copy; the stateless V3 lane).

        Raises:
            InvalidArguments: a bad command name, affinity (not a str), session id (not
                1-128 characters of ``[A-Za-z0-9_.:-]``), timeout (not a finite number in
                ``(0, 86400]``) or args (a value the wire cannot carry, an integer of more
                than 4300 digits, a non-str key, too deep), or rejected by the command —
                all but the last found before anything is sent.
            PayloadTooLarge: the request or the result is over ``max_message_bytes``.
            QueueFull, QueueTimeout: no interpreter free (see ``max_queue``, ``queue_timeout``).
            RequestTimeout: the command overran; its interpreter was replaced.
            WorkerCrashed: the interpreter died; it is being replaced.
            PoolUnavailable: the pool is not running, is backing off after crash loops,
                or belongs to the process this one was forked from.
            UnknownCommand, CommandFailed: from the command (``CommandFailed`` too for a
                result the wire cannot carry, such as an integer of more than 4300 digits).
        """
        if self._owner.elsewhere:
            # Before anything else: even the state's lock may be held for ever here (a
            # parent thread held it at the fork).
            raise self._owner.refusal()
        started = time.perf_counter()
        try:
            # Checked before anything is sent: inf or "5" would fail only after the run.
            timeout = self.settings.request_timeout if timeout is None else checked_timeout(timeout)
            check_scope(affinity, session)
            rid = next(self._request_ids)
            framed = encode_request(
                rid,
                command,
                {} if args is None else args,
                limit=self.settings.max_message_bytes,
                session=session,
                transient=transient,
            )
            # On success the request is counted by the release, under the same lock.
            result = self._run(rid, framed, command, timeout, affinity, started)
        except errors.SnakepoolError as exc:
            self._finished(command, started, exc)
            raise
        except BaseException:
            self._finished(command, started, None)
            raise
        if self._observes_requests:
            self.observer.safely("on_request", command, time.perf_counter() - started, None)
        return result

    def _finished(self, command: str, started: float, error: errors.SnakepoolError | None) -> None:
        """Count a request that did not end in a release (an error, an interruption)."""
        elapsed = time.perf_counter() - started
        self._state.record_request(elapsed, failed=error is not None)
        if self._observes_requests:
            self.observer.safely("on_request", command, elapsed, error)

    def _run(  # noqa: PLR0917 - the request, encoded, and when it began
        self,
        rid: int,
        framed: bytes,
        command: str,
        timeout: float,
        affinity: str | None,
        started: float,
    ) -> Any:
        """Lease, call, and give the interpreter back (or have it replaced) on every path.

        A request that succeeds is counted by the release (``started``: its
        ``perf_counter`` at the start); every other path leaves the count to the caller.
        """
        for attempt in (1, 2):
            ticket = Ticket(affinity)
            interpreter: Interpreter | None = None
            settled = False  # the interpreter went back through release/discard/retire
            try:
                interpreter = self._state.lease(ticket)
                try:
                    result = interpreter.call_framed(rid, framed, command, timeout)
                except Broken as broken:
                    settled = True
                    self._supervisor.discard(interpreter, broken.error)
                    # Never sent: it died before it saw the request, so one retry is safe.
                    if broken.sent or attempt == 2:
                        raise broken.error from None
                    continue
                except errors.SnakepoolError:
                    settled = True
                    self._supervisor.release(interpreter)  # the command's error: it is fine
                    raise
                settled = True
                self._supervisor.release(interpreter, started=started)
                return result
            finally:
                if not settled:
                    self._abandon(ticket, interpreter)
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandon(self, ticket: Ticket, interpreter: Interpreter | None) -> None:
        """The request ended in an exception that is not the interpreter's doing: a lease
        error (QueueFull, QueueTimeout, ...) or one of the caller's own (KeyboardInterrupt,
        a bug), possibly between lease and call. Nothing leased may be lost."""
        if interpreter is None:
            # Not leased, or leased a moment ago: the ticket knows (see Ticket).
            granted = self._state.cancel(ticket)
            if granted is not None:
                self._supervisor.release(granted)  # unused: straight back into service
            return
        # Interrupted at an unknown point of the exchange: a reply may still be on its
        # way, so this interpreter must not serve again. Retired, it finishes and exits
        # cleanly, with no restart penalty; a fresh one takes its place.
        interrupted = sys.exc_info()[1]
        why = type(interrupted).__name__ if interrupted is not None else "an interruption"
        self._supervisor.retire(interpreter, f"its request was interrupted by {why}")

    # ---------------------------------------------------------------- inspection

    def affinity_of(self, key: str) -> int | None:
        """The pid of the interpreter ``key`` is bound to, if it is alive."""
        interpreter = self._state.affinity_of(key)
        return interpreter.pid if interpreter is not None else None

    def commands(self) -> dict[str, dict[str, bool]]:
        """The adapter's commands and their flags (``read_only``, ``idempotent``)."""
        return self._state.commands()

    def interpreter_pids(self) -> list[int]:
        """Pids of the interpreters in service (starting ones excluded)."""
        return self._state.snapshot().pids

    def stats(self) -> dict[str, Any]:
        """Current figures, consistent with each other: state, size, live, idle, busy,
        queued, starting, requests, errors, crashes, timeouts, recycled, restarts,
        health_checks, p50_ms, p99_ms, adapter, start_method, unavailable, pids.

        ``idle + busy + starting`` is ``size`` whenever no replacement is pending."""
        snap = self._state.snapshot()
        return {
            "state": snap.phase,
            "size": self.settings.pool_size,
            "live": snap.idle + snap.busy,
            "idle": snap.idle,
            "busy": snap.busy,
            "queued": snap.queued,
            "starting": snap.starting,
            **snap.counts,
            "p50_ms": snap.percentile_ms(0.50),
            "p99_ms": snap.percentile_ms(0.99),
            "adapter": self.settings.adapter,
            "start_method": self.settings.start_method,
            "unavailable": snap.unavailable,
            "pids": snap.pids,
        }

    def child_env(self) -> dict[str, str]:
        """The environment of the template and interpreters
        (:func:`~snakepool.pool.environment.interpreter_env`: ours, importing what we can,
        the adapter's settings from ours, never the Redis and broker URLs)."""
        return interpreter_env(self.settings, os.environ if self._env is None else self._env)
