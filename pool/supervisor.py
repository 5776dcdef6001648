"""The supervisor: one thread per pool that starts, watches and replaces its interpreters.

It owns the template and every interpreter's fds (through a :class:`~snakepool.pool.watch.Watch`)
and runs a loop over the template's reports, the reply pipes of interpreters that are
starting or being health-checked, everyone's output, and work posted by other threads.
Callers never wait on it: requests go straight to leased interpreters. Every change to
who is in service goes through the pool's :class:`~snakepool.pool.state.PoolState`.

It keeps the pool at its size by reconciliation: whenever interpreters are missing, and
the restart intensity allows (OTP-style: at most ``restart_intensity`` unplanned
restarts in ``restart_period`` seconds), it asks the template for more. Past that it
backs off exponentially and, if nothing is left serving, the pool answers
``PoolUnavailable`` — a crash loop never becomes a fork loop. Planned recycling
(requests, memory, age) does not count against the intensity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from snakepool import errors
from snakepool.config.settings import PoolSettings
from snakepool.pool.health import HEALTH_TIMEOUT_SECONDS, HealthChecks
from snakepool.pool.hooks import PoolObserver
from snakepool.pool.intensity import RestartIntensity
from snakepool.pool.interpreter import wire
from snakepool.pool.protocol import ChannelClosed
from snakepool.pool.recycling import RecyclePolicy
from snakepool.pool.registry import ProcessRegistry
from snakepool.pool.spawner import Spawner
from snakepool.pool.state import Phase, PoolState
from snakepool.pool.watch import Watch
from snakepool.pool.worker import Interpreter, State

__all__ = ["Supervisor"]

log = logging.getLogger("snakepool.pool.supervisor")

#: How long a retiring interpreter may take to exit before it is killed.
RETIRE_GRACE_SECONDS = 5.0


class Supervisor:
    """Starts, watches and replaces the interpreters of one pool.

    Args:
        settings: The pool's settings.
        state: The pool's state machine (the only thing it changes about the pool).
        run_id: The pool's run id (process registry marker, thread name).
        registry: Where every process it starts is recorded.
        observer: Told of interpreters ready, lost, exited, and of back-offs.
        env: Builds the template's environment (called at each template start).
        preload: Extra modules the template imports before forking.
    """

    def __init__(
        self,
        *,
        settings: PoolSettings,
        state: PoolState,
        run_id: str,
        registry: ProcessRegistry,
        observer: PoolObserver,
        env: Callable[[], dict[str, str]],
        preload: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.state = state
        self.run_id = run_id
        self.observer = observer
        self._watch = Watch()
        self._spawner = Spawner(
            settings=settings, run_id=run_id, registry=registry, watch=self._watch,
            env=env, preload=preload,
        )  # fmt: skip
        self._thread: threading.Thread | None = None
        self._health = HealthChecks(
            timeout=min(HEALTH_TIMEOUT_SECONDS, settings.request_timeout), watch=self._watch
        )
        self._recycle = RecyclePolicy(settings)
        self._intensity = RestartIntensity(
            intensity=settings.restart_intensity, period=settings.restart_period
        )
        self._health_due = time.monotonic() + settings.health_check_interval
        self._initial: threading.Event | None = None
        self._initial_error: errors.SnakepoolError | None = None
        self._running = False
        self._stop_deadline: float | None = None

    # ------------------------------------------------------- called by other threads

    def start(self, size: int) -> None:
        """Start the template, then ``size`` interpreters at once; wait for all of them.

        Raises:
            ConfigError: the adapter cannot be loaded, or the Python is unusable.
            PoolUnavailable: not all ready within ``startup_timeout``.
        """
        self._spawner.start_template()
        self._initial = threading.Event()
        self._running = True
        self._thread = threading.Thread(
            target=self._run, name=f"snakepool-supervisor-{self.run_id}", daemon=True
        )
        self._thread.start()
        self._watch.post("spawn", size)
        if not self._initial.wait(self.settings.startup_timeout + 1.0):
            raise errors.PoolUnavailable(
                f"interpreters not ready within startup_timeout={self.settings.startup_timeout:g}s"
            )
        if self._initial_error is not None:
            raise self._initial_error

    def stop(self, grace: float) -> None:
        """Retire everything, stop the template, end the thread (blocks until done)."""
        if self._thread is None:
            self._spawner.stop()
            self._watch.close()
            return
        self._watch.post("stop", grace)
        self._thread.join(grace + 10.0)

    def release(self, interpreter: Interpreter, *, started: float | None = None) -> None:
        """A lease ended well: back into service, or recycled / replaced if due.

        Args:
            started: The ``perf_counter`` at which a request that succeeded began: it is
                counted as done (with its latency) on the way, whatever happens to the
                interpreter.
        """
        interpreter.last_used = time.monotonic()
        reason = self._recycle.reason(interpreter)
        seconds = None if started is None else time.perf_counter() - started
        if reason is not None:
            if seconds is not None:
                self.state.record_request(seconds, failed=False)
            self.retire(interpreter, reason)
        elif not self.state.release(interpreter, seconds=seconds):
            self.discard(interpreter, interpreter.crashed("it exited after replying", wait=False))

    def discard(self, interpreter: Interpreter, error: errors.SnakepoolError) -> None:
        """An interpreter broke (crash, timeout, failed health check): kill and replace it."""
        counter = "timeouts" if isinstance(error, errors.RequestTimeout) else "crashes"
        if not self.state.discard(interpreter, counter):
            return
        interpreter.kill()
        log.warning("%s", error.message)
        self.observer.safely("on_interpreter_lost", interpreter.pid, error)
        if self._stop_deadline is None and self.state.phase not in (Phase.STOPPING, Phase.STOPPED):
            self._count_restart()  # a loss while stopping is not a crash loop
        self._watch.post("left", interpreter)

    def retire(self, interpreter: Interpreter, reason: str) -> None:
        """Recycle an interpreter on purpose: clean exit on EOF, no restart penalty."""
        if not self.state.retire(interpreter, reason):
            return
        log.info("recycling %s: %s", interpreter.label, reason)
        self._watch.post("left", interpreter)

    # -------------------------------------------------------------- the loop

    def _run(self) -> None:
        while self._running:
            try:
                self._iterate()
            except Exception:
                # One bad event must not take the pool's supervision down with it.
                log.exception("supervisor of pool %s: error handling an event", self.run_id)
        self._watch.close()

    def _iterate(self) -> None:
        timeout = max(0.0, min(self._next_timer() - time.monotonic(), 1.0))
        for kind, interpreter in self._watch.wait(timeout):
            if kind == "ctl":
                self._on_template_events()
            elif interpreter is not None:
                self._on_reply(interpreter)
        for kind, arg in self._watch.messages():
            if kind == "spawn":
                self._spawn(arg)
            elif kind == "left":
                self._on_left(arg)
            elif kind == "stop":
                # At least a moment for clean exits on EOF, even with no grace left.
                self._stop_deadline = time.monotonic() + max(arg, 0.5)
                # EOF ends every interpreter not serving a request; busy ones finish first.
                self._spawner.close_request_pipes(
                    State.IDLE, State.RETIRING, State.DEAD, State.STARTING
                )
        self._on_timers()

    def _next_timer(self) -> float:
        deadlines = [self._health_due, *self._health.deadlines()]
        startup = self.settings.startup_timeout
        deadlines += [i.spawned_at + startup for i in self.state.starting_interpreters()]
        if self._intensity.respawn_at:
            deadlines.append(self._intensity.respawn_at)
        if self._stop_deadline is not None:
            deadlines.append(time.monotonic() + 0.05)
        return min(deadlines)

    def _on_timers(self) -> None:
        now = time.monotonic()
        if self._stop_deadline is not None:
            if not self._spawner or now >= self._stop_deadline:
                self._finish()
            return
        for interpreter in self.state.starting_interpreters():
            if now - interpreter.spawned_at > self.settings.startup_timeout:
                self._start_failed(interpreter, "no readiness handshake within startup_timeout")
        for seq in self._health.overdue(now):
            if (checked := self._spawner.get(seq)) is not None:
                self._health.end(checked)
                error = checked.crashed("it did not answer a health ping", wait=False)
                self.discard(checked, error)
        self._spawner.kill_retired_after(RETIRE_GRACE_SECONDS, now)
        if now >= self._health_due:
            self._health_due = now + self.settings.health_check_interval
            self._health_sweep(now)
        self._reconcile(now)

    # ------------------------------------------------------------- spawning

    def _spawn(self, count: int) -> None:
        for interpreter in self._spawner.spawn(count):
            self.state.add_starting(interpreter)

    def _reconcile(self, now: float) -> None:
        if (
            self._initial is None
            or not self._initial.is_set()
            or self._initial_error is not None
            or self._stop_deadline is not None
            or now < self._intensity.respawn_at
        ):
            return
        if self._spawner.template is None:
            try:
                self._spawner.start_template()
            except errors.SnakepoolError as exc:
                log.error("cannot restart the template: %s", exc.message)
                self._count_restart()
                return
        missing = self.settings.pool_size - self.state.in_service()
        if missing > 0:
            self.state.count("restarts", missing)
            self._spawn(missing)

    def _count_restart(self) -> None:
        """Record an unplanned restart; past the intensity, back off and, if nothing is
        left serving, make the pool answer ``PoolUnavailable``."""
        delay = self._intensity.record(time.monotonic())
        if delay is None:
            return
        message = (
            f"{len(self._intensity)} interpreter restarts within "
            f"restart_period={self.settings.restart_period:g}s "
            f"(restart_intensity={self.settings.restart_intensity}); backing off {delay:g}s"
        )
        log.error("pool %s: %s", self.run_id, message)
        self.state.set_unavailable(errors.PoolUnavailable(message, retry_after=delay))
        self.observer.safely("on_unavailable", delay)

    # ------------------------------------------------------------- events

    def _on_template_events(self) -> None:
        for op, interpreter, detail in self._spawner.events():
            if op == "eof":
                self._on_template_death()
            elif interpreter is None:
                continue
            elif op == "exited":
                self._on_exit(interpreter, detail)
            elif interpreter.state is State.STARTING:  # spawn_failed
                self._start_failed(interpreter, f"fork failed: {detail}")

    def _on_reply(self, interpreter: Interpreter) -> None:
        try:
            message = interpreter.channel.feed()
        except (ChannelClosed, wire.DecodeError) as exc:
            self._watch.unwatch_reply(interpreter)
            reason = "EOF" if isinstance(exc, ChannelClosed) else f"protocol violation: {exc}"
            if interpreter.state is State.STARTING:
                self._start_failed(interpreter, f"{reason} before the readiness handshake")
            else:
                self._health.end(interpreter)
                interpreter.kill()
                self.discard(interpreter, interpreter.crashed(f"health ping: {reason}"))
            return
        if message is None:
            return
        if interpreter.state is State.STARTING and isinstance(message, wire.Ready):
            self._on_ready(interpreter, message)
        elif self._health.pending(interpreter) and isinstance(message, wire.Reply):
            if self._health.answered(interpreter, message):
                self.release(interpreter)
            else:
                interpreter.kill()
                self.discard(interpreter, interpreter.crashed("bad health ping reply"))

    def _on_ready(self, interpreter: Interpreter, ready: wire.Ready) -> None:
        self._watch.unwatch_reply(interpreter)  # from now on its caller reads replies
        self._spawner.attach(interpreter, ready.pid)
        interpreter.commands = ready.commands
        interpreter.ready_at = interpreter.last_used = time.monotonic()
        in_service = self.state.admit(interpreter)
        self.observer.safely(
            "on_interpreter_ready", ready.pid, interpreter.seq,
            interpreter.ready_at - interpreter.spawned_at,
        )  # fmt: skip
        self._spawner.ready(interpreter)
        initial = self._initial
        if initial is not None and not initial.is_set() and in_service >= self.settings.pool_size:
            initial.set()

    def _on_exit(self, interpreter: Interpreter, status: int | None) -> None:
        """The template reported the exit (``status``), or the template died (None)."""
        state = self.state.mark_exited(interpreter, status)
        if interpreter.pid is not None and status is not None:
            exit_code, signum, _ = errors.describe_exit(status)
            self.observer.safely("on_interpreter_exit", interpreter.pid, exit_code, signum)
        self._watch.drain_output(interpreter)
        if self._stop_deadline is not None and state is not State.BUSY:
            self.state.mark_dead(interpreter)  # stopping: an exit is expected
            self._spawner.dispose(interpreter)
        elif state is State.STARTING:
            reason = "it exited" if status is not None else "the template died"
            self._start_failed(interpreter, f"{reason} before the readiness handshake")
        elif state in (State.IDLE, State.CHECKING):
            self._health.end(interpreter)
            why = "it died while idle" if status is not None else "the template died"
            self.discard(interpreter, interpreter.crashed(why, wait=False))
        elif state in (State.RETIRING, State.DEAD):
            self._spawner.dispose(interpreter)
        # BUSY: its caller sees EOF and discards it; disposal follows from "left".

    def _on_left(self, interpreter: Interpreter) -> None:
        self._health.end(interpreter)
        if interpreter.state is State.RETIRING:
            interpreter.channel.close_request_pipe()  # clean exit on EOF
            interpreter.spawned_at = time.monotonic()  # reused as the retire clock
        if interpreter.exited.is_set():
            self._spawner.dispose(interpreter)

    def _on_template_death(self) -> None:
        if self._spawner.template is None:
            return
        status = self._spawner.template_died()
        if self._stop_deadline is not None:
            return
        log.error("the template process died (status %s); its interpreters die with it", status)
        for interpreter in self._spawner.interpreters():
            self._on_exit(interpreter, None)
        self._count_restart()

    def _start_failed(self, interpreter: Interpreter, reason: str) -> None:
        self.state.mark_dead(interpreter)
        self._watch.unwatch_reply(interpreter)
        interpreter.kill()
        self._watch.drain_output(interpreter)
        output = "\n".join(interpreter.recent_output)
        message = f"{interpreter.label} failed to start: {reason}" + (
            f"\n--- its output ---\n{output}" if output else ""
        )
        if self._initial is not None and not self._initial.is_set():
            self._initial_error = errors.PoolUnavailable(message)
            self._initial.set()
        else:
            log.error("%s", message)
            self.state.count("crashes")
            self._count_restart()
        if interpreter.exited.is_set():
            self._spawner.dispose(interpreter)

    # --------------------------------------------------------- health checks

    def _health_sweep(self, now: float) -> None:
        for interpreter in self.state.idle_interpreters():
            if now - interpreter.last_used < self.settings.health_check_interval / 2:
                continue  # it just served a request: that was its health check
            reason = self._recycle.reason(interpreter)
            if reason is not None:
                self.retire(interpreter, reason)
            elif not self.state.take_idle_for_check(interpreter):
                continue
            elif self._health.ping(interpreter, now):
                self.state.count("health_checks")
            else:
                interpreter.kill()
                self.discard(interpreter, interpreter.crashed("health ping not delivered"))

    # ------------------------------------------------------------- shutdown

    def _finish(self) -> None:
        """Kill what is left, stop the template, close everything, end the loop."""
        self._running = False
        self._spawner.stop()
