"""The pool: N warm interpreters, one request at a time each, a bounded FIFO for the rest.

::

    caller thread                        Pool (one lock)                 Supervisor thread
    ─────────────                        ───────────────                 ─────────────────
    execute(cmd) ──► _lease() ─ idle? ──► pop idle ─────────────┐        template: spawn/exited
                        │ no                                    │        ready handshakes
                        └► waiters (FIFO, ≤ max_queue) ◄─ hand-off on release
                                                                │        health pings of idle ones
    Interpreter.call(): frame ─► pipe ─► interpreter ─► reply ◄─┘        output → logging
                        │ ok/command error ─► _release()        (idle or next waiter)
                        └ timeout/crash ───► _discard() ──────────────►  replace (restart intensity,
                                                                          back-off, PoolUnavailable)

The caller's own thread does the pipe I/O, so the hot path is a lock, a write, a poll
and a read. Everything slow or asynchronous (starting interpreters, noticing deaths,
health checks, draining output) happens in the :class:`~snakepool.pool.supervisor.Supervisor`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from snakepool import errors
from snakepool.config.settings import PoolSettings, load_pool_settings
from snakepool.pool.hooks import PoolObserver
from snakepool.pool.interpreter_path import interpreter_import_root
from snakepool.pool.registry import ProcessRegistry, default_registry_dir
from snakepool.pool.supervisor import Supervisor
from snakepool.pool.worker import Broken, Interpreter, State

if TYPE_CHECKING:
    from snakepool.config.settings import Settings

__all__ = ["Pool"]

log = logging.getLogger("snakepool.pool")

#: Recent request latencies kept for the p50/p99 in :meth:`Pool.stats`.
LATENCY_WINDOW = 2048
#: Affinity keys remembered (least recently used forgotten first).
MAX_AFFINITY_KEYS = 100_000

_NEW, _STARTING, _RUNNING, _STOPPING, _STOPPED = (
    "new", "starting", "running", "stopping", "stopped",
)  # fmt: skip


class _Waiter:
    __slots__ = ("error", "event", "interpreter", "wanted")

    def __init__(self, wanted: Interpreter | None) -> None:
        self.event = threading.Event()
        self.wanted = wanted  # a specific interpreter (affinity), or None for any
        self.interpreter: Interpreter | None = None
        self.error: errors.SnakepoolError | None = None


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
        self._env = env
        self._preload = preload
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = _NEW
        self._members: dict[int, Interpreter] = {}
        self._idle: deque[Interpreter] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._affinity: OrderedDict[str, int] = OrderedDict()  # key → interpreter seq
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._counts = dict.fromkeys(
            ("requests", "errors", "crashes", "timeouts", "recycled", "restarts", "health_checks"),
            0,
        )
        self._unavailable: errors.PoolUnavailable | None = None
        registry_dir = self.settings.registry_dir or default_registry_dir()
        self.registry = ProcessRegistry(Path(registry_dir))
        self._supervisor = Supervisor(self)

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
            PoolUnavailable: interpreters did not become ready within the startup timeout.
        """
        with self._lock:
            if self._state != _NEW:
                raise errors.PoolUnavailable(f"pool already {self._state}")
            self._state = _STARTING
        killed = self.registry.sweep()
        if killed:
            log.warning("killed %d leftover process(es) of dead runs: %s", len(killed), killed)
        try:
            self._supervisor.start(self.settings.pool_size)
        except BaseException:
            self._supervisor.stop(grace=0)
            with self._lock:
                self._state = _STOPPED
            raise
        with self._lock:
            self._state = _RUNNING

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight and queued work for up to ``grace`` seconds, then stop.

        New requests are refused from the start; whatever is still queued at the end of
        the grace period gets ``PoolUnavailable``. No process is left behind.
        """
        deadline = time.monotonic() + grace
        with self._lock:
            if self._state in (_STOPPING, _STOPPED):
                return
            if self._state == _NEW:
                self._state = _STOPPED
                self._supervisor.stop(grace=0)  # gives back its fds; starts nothing
                return
            self._state = _STOPPING
            while self._waiters or any(m.state is State.BUSY for m in self._members.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self._fail_waiters(errors.PoolUnavailable("the pool stopped"))
        self._supervisor.stop(grace=max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._state = _STOPPED
            self._idle.clear()
            self._members.clear()
        self.registry.forget_run(self.run_id)

    def __enter__(self) -> Self:
        if self._state == _NEW:
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
            args: Its arguments (a dict; None means ``{}``).
            timeout: Seconds the command may run; default ``request_timeout``.
            affinity: Requests with the same key run on the same interpreter (waiting
                for it when busy) for as long as it lives; then the key moves to another.
            session: The session the request belongs to; commands that keep state in
                the interpreter key it by this, so sessions sharing one never meet.
            transient: The request must leave no state in the interpreter (a shadow
                copy; the stateless V3 lane).

        Raises:
            QueueFull, QueueTimeout: no interpreter free (see ``max_queue``, ``queue_timeout``).
            RequestTimeout: the command overran; its interpreter was replaced.
            WorkerCrashed: the interpreter died; it is being replaced.
            PoolUnavailable: the pool is not running, or is backing off after crash loops.
            UnknownCommand, InvalidArguments, CommandFailed, PayloadTooLarge: from the command.
        """
        started = time.perf_counter()
        error: errors.SnakepoolError | None = None
        try:
            if not isinstance(command, str) or not command:
                raise errors.InvalidArguments("command must be a non-empty string")
            if args is None:
                args = {}
            elif not isinstance(args, dict):
                raise errors.InvalidArguments(f"args must be a dict, not {type(args).__name__}")
            if timeout is None:
                timeout = self.settings.request_timeout
            elif not timeout > 0:
                raise errors.InvalidArguments("timeout must be a positive number of seconds")
            for attempt in (1, 2):
                interpreter = self._lease(affinity)
                try:
                    result = interpreter.call(
                        command, args, timeout, session=session, transient=transient
                    )
                except Broken as broken:
                    self._discard(interpreter, broken.error)
                    # Never sent: it died before it saw the request, so one retry is safe.
                    if broken.sent or attempt == 2:
                        raise broken.error from None
                    continue
                except errors.SnakepoolError:
                    self._release(interpreter)
                    raise
                self._release(interpreter)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        except errors.SnakepoolError as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._counts["requests"] += 1
                self._counts["errors"] += error is not None
                self._latencies.append(elapsed)
            if self._observes_requests:
                self.observer.safely("on_request", command, elapsed, error)

    def _lease(self, affinity: str | None = None) -> Interpreter:
        with self._lock:
            if self._state != _RUNNING:
                raise errors.PoolUnavailable(f"the pool is {self._state}")
            wanted = self._bound(affinity)
            if wanted is not None:
                if wanted.state is State.IDLE:
                    self._idle.remove(wanted)
                    wanted.state = State.BUSY
                    return wanted
            elif self._idle and not self._waiters:
                interpreter = self._idle.pop()  # most recently used: warmest caches
                interpreter.state = State.BUSY
                self._bind(affinity, interpreter)
                return interpreter
            if self._unavailable is not None and not self._has_capacity_coming():
                raise self._unavailable
            if len(self._waiters) >= self.settings.max_queue:
                raise errors.QueueFull(
                    f"all {len(self._members)} interpreters busy and "
                    f"{len(self._waiters)} requests queued (max_queue={self.settings.max_queue})",
                    queued=len(self._waiters),
                    max_queue=self.settings.max_queue,
                )
            waiter = _Waiter(wanted)
            self._waiters.append(waiter)
        waiter.event.wait(self.settings.queue_timeout)
        with self._lock:
            if waiter.interpreter is not None:
                self._bind(affinity, waiter.interpreter)
                return waiter.interpreter
            if waiter.error is not None:
                raise waiter.error
            self._waiters.remove(waiter)
        raise errors.QueueTimeout(
            f"no interpreter became free within queue_timeout={self.settings.queue_timeout:g}s",
            queue_timeout=self.settings.queue_timeout,
        )

    def _bound(self, affinity: str | None) -> Interpreter | None:
        """The live interpreter ``affinity`` is bound to (lock held)."""
        if affinity is None:
            return None
        seq = self._affinity.get(affinity)
        interpreter = self._members.get(seq) if seq is not None else None
        if interpreter is None or interpreter.state in (State.DEAD, State.RETIRING):
            return None
        self._affinity.move_to_end(affinity)
        return interpreter

    def _bind(self, affinity: str | None, interpreter: Interpreter) -> None:
        if affinity is not None and self._affinity.get(affinity) != interpreter.seq:
            self._affinity[affinity] = interpreter.seq
            self._affinity.move_to_end(affinity)
            while len(self._affinity) > MAX_AFFINITY_KEYS:
                self._affinity.popitem(last=False)

    def affinity_of(self, key: str) -> int | None:
        """The pid of the interpreter ``key`` is bound to, if it is alive."""
        with self._lock:
            interpreter = self._bound(key)
            return interpreter.pid if interpreter is not None else None

    def _has_capacity_coming(self) -> bool:
        return any(m.state is not State.DEAD for m in self._members.values())

    def _hand_over(self, interpreter: Interpreter) -> None:
        """Give an idle interpreter to the first waiter that may take it, or park it
        (lock held). A waiter bound to another interpreter is skipped, not served."""
        for waiter in self._waiters:
            if waiter.wanted is None or waiter.wanted is interpreter:
                self._waiters.remove(waiter)
                interpreter.state = State.BUSY
                waiter.interpreter = interpreter
                waiter.event.set()
                break
        else:
            interpreter.state = State.IDLE
            self._idle.append(interpreter)
        if self._state == _STOPPING:
            self._changed.notify_all()  # stop() waits for the last busy interpreter

    def _release(self, interpreter: Interpreter) -> None:
        interpreter.last_used = time.monotonic()
        reason = self._supervisor.recycle_reason(interpreter)
        with self._lock:
            if interpreter.exit_status is None and reason is None:
                self._hand_over(interpreter)
                return
        if reason is not None:
            self._retire(interpreter, reason)
        else:
            self._discard(interpreter, interpreter.crashed("it exited after replying", wait=False))

    # -------------------------------------------- membership (used by the supervisor)

    def _admit(self, interpreter: Interpreter) -> None:
        with self._lock:
            self._members[interpreter.seq] = interpreter
            self._unavailable = None
            if self._state in (_STOPPING, _STOPPED):
                interpreter.state = State.IDLE
                self._idle.append(interpreter)
                self._changed.notify_all()
            else:
                self._hand_over(interpreter)

    def _detach(self, interpreter: Interpreter) -> bool:
        """Take an interpreter out of service (lock held); False if already out."""
        if interpreter.state in (State.DEAD, State.RETIRING):
            return False
        if interpreter.state is State.IDLE:
            self._idle.remove(interpreter)
        self._members.pop(interpreter.seq, None)
        # Waiters bound to it take any interpreter now; serve them from the idle ones.
        for waiter in self._waiters:
            if waiter.wanted is interpreter:
                waiter.wanted = None
        while self._idle and any(w.wanted is None for w in self._waiters):
            self._hand_over(self._idle.pop())
        self._changed.notify_all()
        return True

    def _discard(self, interpreter: Interpreter, error: errors.SnakepoolError) -> None:
        """An interpreter broke (crash, timeout, failed health check): replace it."""
        with self._lock:
            if not self._detach(interpreter):
                return
            interpreter.state = State.DEAD
            key = "timeouts" if isinstance(error, errors.RequestTimeout) else "crashes"
            self._counts[key] += 1
            stopping = self._state in (_STOPPING, _STOPPED)
        interpreter.kill()
        log.warning("%s", error.message)
        self.observer.safely("on_interpreter_lost", interpreter.pid, error)
        self._supervisor.replace(interpreter, planned=False, respawn=not stopping)

    def _retire(self, interpreter: Interpreter, reason: str) -> None:
        """Recycle an interpreter on purpose (requests, memory, age): clean exit, no penalty."""
        with self._lock:
            if not self._detach(interpreter):
                return
            interpreter.state = State.RETIRING
            interpreter.retire_reason = reason
            self._counts["recycled"] += 1
            stopping = self._state in (_STOPPING, _STOPPED)
        log.info("recycling %s: %s", interpreter.label, reason)
        self._supervisor.replace(interpreter, planned=True, respawn=not stopping)

    def _take_idle(self, interpreter: Interpreter) -> bool:
        """Lease a specific idle interpreter for a health check (never waits)."""
        with self._lock:
            if interpreter.state is not State.IDLE or self._state != _RUNNING:
                return False
            self._idle.remove(interpreter)
            interpreter.state = State.CHECKING
            return True

    def _set_unavailable(self, error: errors.PoolUnavailable | None) -> None:
        with self._lock:
            self._unavailable = error
            if error is not None and not self._has_capacity_coming():
                self._fail_waiters(error)

    def _fail_waiters(self, error: errors.SnakepoolError) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = error
            waiter.event.set()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    # ---------------------------------------------------------------- inspection

    def commands(self) -> dict[str, dict[str, bool]]:
        """The adapter's commands and their flags (``read_only``, ``idempotent``)."""
        with self._lock:
            for member in self._members.values():
                if member.commands:
                    return dict(member.commands)
        return {}

    def interpreter_pids(self) -> list[int]:
        """Pids of the interpreters in service (starting ones excluded)."""
        with self._lock:
            return sorted(
                m.pid
                for m in self._members.values()
                if m.pid is not None and m.state is not State.STARTING
            )

    def stats(self) -> dict[str, Any]:
        """Current figures: size, idle, busy, queued, starting, restarts, requests,
        errors, crashes, timeouts, recycled, health_checks, p50_ms, p99_ms, state, adapter,
        pids."""
        with self._lock:
            states = [m.state for m in self._members.values()]
            latencies = sorted(self._latencies)
            counts = dict(self._counts)
            queued = len(self._waiters)
            state = self._state
        starting = self._supervisor.starting_count()
        return {
            "state": state,
            "size": self.settings.pool_size,
            "live": sum(s is not State.STARTING for s in states),
            "idle": states.count(State.IDLE),
            "busy": states.count(State.BUSY) + states.count(State.CHECKING),
            "queued": queued,
            "starting": starting,
            **counts,
            "p50_ms": _percentile_ms(latencies, 0.50),
            "p99_ms": _percentile_ms(latencies, 0.99),
            "adapter": self.settings.adapter,
            "start_method": self.settings.start_method,
            "unavailable": self._unavailable.message if self._unavailable else None,
            "pids": self.interpreter_pids(),
        }

    def child_env(self) -> dict[str, str]:
        """The environment of the template and interpreters.

        With the same Python as ours, ``PYTHONPATH`` is our ``sys.path``, so whatever
        this process can import (a test's adapter, a script's directory) the
        interpreters can too. With another Python, only the interpreter side of
        snakepool (:func:`~snakepool.pool.interpreter_path.interpreter_import_root`) and
        the working directory are added: another version's site-packages would not load.
        """
        env = dict(os.environ if self._env is None else self._env)
        if _same_environment(self.settings.python, sys.executable):
            paths = [os.path.abspath(p or os.curdir) for p in sys.path]
        else:
            paths = [interpreter_import_root(), os.getcwd()]
        if given := env.get("PYTHONPATH"):  # the caller's own entries come first
            paths = [*given.split(os.pathsep), *paths]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        if self.settings.enable_chaos:
            env["SNAKEPOOL_ENABLE_CHAOS"] = "1"
        # The setting decides, not whatever the parent's environment happens to hold.
        env["SNAKEPOOL_ALLOW_ADMIN_COMMANDS"] = "1" if self.settings.allow_admin_commands else "0"
        # Adapters read their own settings from the environment: they cannot import ours.
        env["SNAKEPOOL_LM"] = self.settings.lm
        if self.settings.lm_answers:
            env["SNAKEPOOL_LM_ANSWERS"] = self.settings.lm_answers
        else:
            env.pop("SNAKEPOOL_LM_ANSWERS", None)
        return env


def _same_environment(python: str, ours: str) -> bool:
    """Whether ``python`` runs in our environment: an executable of the same ``bin``.

    Not ``realpath``: every virtual environment's ``python`` links to the same base
    binary, yet each has its own site-packages.
    """
    found = shutil.which(python) or python
    return os.path.dirname(os.path.abspath(found)) == os.path.dirname(os.path.abspath(ours))


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return round(ordered[index] * 1000, 3)
