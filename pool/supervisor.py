"""The supervisor: one thread per pool that owns the template and every interpreter's fds.

It runs a selector loop over the template's control socket (spawned / exited reports),
the reply pipes of interpreters that are starting or being health-checked, everyone's
stdout/stderr, and a wake-up pipe other threads use to post work. Callers never wait on
it: requests go straight to leased interpreters (see :mod:`snakepool.pool.pool`).

It keeps the pool at its size by reconciliation: whenever interpreters are missing, and
the restart intensity allows (OTP-style: at most ``restart_intensity`` unplanned
restarts in ``restart_period`` seconds), it asks the template for more. Past that it
backs off exponentially and, if nothing is left serving, the pool answers
``PoolUnavailable`` — a crash loop never becomes a fork loop. Planned recycling
(requests, memory, age) does not count against the intensity.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from snakepool import errors
from snakepool.pool.intensity import RestartIntensity
from snakepool.pool.interpreter import wire
from snakepool.pool.output import OutputLog
from snakepool.pool.protocol import Channel, ChannelClosed
from snakepool.pool.template import Template
from snakepool.pool.worker import Interpreter, State

if TYPE_CHECKING:
    from snakepool.pool.pool import Pool

__all__ = ["Supervisor"]

log = logging.getLogger("snakepool.pool.supervisor")

#: How long a health ping may take before the interpreter is replaced.
HEALTH_TIMEOUT_SECONDS = 5.0
#: How long a retiring interpreter may take to exit before it is killed.
RETIRE_GRACE_SECONDS = 5.0


class Supervisor:
    """Starts, watches and replaces the interpreters of one :class:`~pool.Pool`."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.settings = pool.settings
        self.template: Template | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        # A pool that is dropped without ever being started still gives its fds back.
        self._finalizer = weakref.finalize(
            self, _close_quietly, self._selector, self._wake_r, self._wake_w
        )
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._thread: threading.Thread | None = None
        self._seq = itertools.count(1)
        self._all: dict[int, Interpreter] = {}  # every interpreter whose fds are open
        self._starting: dict[int, Interpreter] = {}
        self._by_pid: dict[int, Interpreter] = {}
        self._checking: dict[int, tuple[int, float]] = {}  # seq → (request id, deadline)
        self._output = OutputLog()
        self._intensity = RestartIntensity(
            intensity=self.settings.restart_intensity, period=self.settings.restart_period
        )
        self._respawn_at = 0.0
        self._health_due = time.monotonic() + self.settings.health_check_interval
        self._recycling = bool(
            self.settings.max_requests_per_worker
            or self.settings.max_worker_age
            or self.settings.max_worker_rss_mb
        )
        self._initial: threading.Event | None = None
        self._initial_error: errors.SnakepoolError | None = None
        self._running = False
        self._stop_deadline: float | None = None

    # ------------------------------------------------------- called by other threads

    def start(self, size: int) -> None:
        """Start the template, then ``size`` interpreters at once; wait for all of them."""
        self._start_template()
        self._initial = threading.Event()
        self._running = True
        self._thread = threading.Thread(
            target=self._run, name=f"snakepool-supervisor-{self.pool.run_id}", daemon=True
        )
        self._thread.start()
        self._post("spawn", size)
        if not self._initial.wait(self.settings.startup_timeout + 1.0):
            raise errors.PoolUnavailable(
                f"interpreters not ready within startup_timeout={self.settings.startup_timeout:g}s"
            )
        if self._initial_error is not None:
            raise self._initial_error

    def stop(self, grace: float) -> None:
        """Retire everything, stop the template, end the thread (blocks until done)."""
        if self._thread is None:
            if self.template is not None:
                self.template.stop(1.0)
            self._close_own_fds()
            return
        self._post("stop", grace)
        self._thread.join(grace + 10.0)

    def replace(self, interpreter: Interpreter, *, planned: bool, respawn: bool) -> None:
        """An interpreter left service (the pool already detached it)."""
        if not planned and respawn:
            self._count_restart()
        self._post("left", interpreter)

    def starting_count(self) -> int:
        """Interpreters spawned but not yet ready."""
        return len(self._starting)

    def recycle_reason(self, interpreter: Interpreter) -> str | None:
        """Why this interpreter should be recycled now, or None."""
        if not self._recycling:
            return None
        s = self.settings
        if s.max_requests_per_worker and interpreter.requests >= s.max_requests_per_worker:
            return f"served {interpreter.requests} requests (max_requests_per_worker)"
        if s.max_worker_age and interpreter.ready_at is not None:
            age = time.monotonic() - interpreter.ready_at
            if age >= s.max_worker_age:
                return f"{age:.0f}s old (max_worker_age={s.max_worker_age:g})"
        if s.max_worker_rss_mb:
            rss = interpreter.rss_bytes()
            if rss is not None and rss > s.max_worker_rss_mb * 1024 * 1024:
                return f"RSS {rss / 2**20:.0f} MB over max_worker_rss_mb={s.max_worker_rss_mb}"
        return None

    def _post(self, *message: Any) -> None:
        self._inbox.append(message)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # -------------------------------------------------------------- the loop

    def _run(self) -> None:
        while self._running:
            try:
                self._iterate()
            except Exception:
                # One bad event must not take the pool's supervision down with it.
                log.exception("supervisor of pool %s: error handling an event", self.pool.run_id)
        self._close_own_fds()

    def _iterate(self) -> None:
        timeout = max(0.0, min(self._next_timer() - time.monotonic(), 1.0))
        registered = self._selector.get_map()
        for key, _ in self._selector.select(timeout):
            if registered.get(key.fd) is not key:
                continue  # unregistered by an earlier event in this batch
            kind, interpreter = key.data
            if kind == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif kind == "ctl":
                self._on_template_events()
            elif kind == "reply":
                self._on_reply(interpreter)
            else:
                self._on_output(key.fd, kind, interpreter)
        while self._inbox:
            self._handle(*self._inbox.popleft())
        self._on_timers()

    def _handle(self, kind: str, arg: Any) -> None:
        if kind == "spawn":
            self._spawn(arg)
        elif kind == "left":
            self._on_left(arg)
        elif kind == "stop":
            # At least a moment for clean exits on EOF, even with no grace left.
            self._stop_deadline = time.monotonic() + max(arg, 0.5)
            self._begin_stop()

    def _next_timer(self) -> float:
        deadlines = [self._health_due]
        deadlines += [i.spawned_at + self.settings.startup_timeout for i in self._starting.values()]
        deadlines += [deadline for _, deadline in self._checking.values()]
        if self._respawn_at:
            deadlines.append(self._respawn_at)
        if self._stop_deadline is not None:
            deadlines.append(time.monotonic() + 0.05)
        return min(deadlines)

    def _on_timers(self) -> None:
        now = time.monotonic()
        if self._stop_deadline is not None:
            if not self._all or now >= self._stop_deadline:
                self._finish()
            return
        for interpreter in list(self._starting.values()):
            if now - interpreter.spawned_at > self.settings.startup_timeout:
                self._start_failed(interpreter, "no readiness handshake within startup_timeout")
        for seq, (_, deadline) in list(self._checking.items()):
            if now > deadline:
                interpreter = self._all[seq]
                self._end_check(interpreter)
                interpreter.kill()
                self.pool._discard(
                    interpreter, interpreter.crashed("it did not answer a health ping", wait=False)
                )
        for interpreter in list(self._all.values()):
            if (
                interpreter.state is State.RETIRING
                and not interpreter.exited.is_set()
                and now - interpreter.spawned_at > RETIRE_GRACE_SECONDS
            ):
                log.warning("%s did not exit when retired; killing it", interpreter.label)
                interpreter.kill()
        if now >= self._health_due:
            self._health_due = now + self.settings.health_check_interval
            self._health_sweep(now)
        self._reconcile(now)

    # ------------------------------------------------------------- spawning

    def _start_template(self) -> None:
        mode = "fork" if self.settings.start_method == "forkserver" else "spawn"
        template = Template(
            run_id=self.pool.run_id,
            adapter=self.settings.adapter,
            mode=mode,
            python=self.settings.python,
            env=self.pool.child_env(),
            preload=self.pool._preload,
        )
        template.start(self.settings.startup_timeout)
        self.template = template
        assert template.pid is not None and template.sock is not None
        self.pool.registry.record(run_id=self.pool.run_id, role="template", pid=template.pid)
        self._selector.register(template.sock, selectors.EVENT_READ, ("ctl", None))
        for fd, kind in ((template.out_fd, "out"), (template.err_fd, "err")):
            os.set_blocking(fd, False)
            self._selector.register(fd, selectors.EVENT_READ, (kind, None))

    def _spawn(self, count: int) -> None:
        for _ in range(count):
            if self.template is None or self.template.sock is None:
                return
            seq = next(self._seq)
            req_r, req_w = os.pipe()
            resp_r, resp_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            interpreter = Interpreter(
                seq=seq,
                channel=Channel(req_w, resp_r, limit=self.settings.max_message_bytes),
                out_fd=out_r,
                err_fd=err_r,
                killer=self.template.kill_interpreter,  # where no pidfd can be opened
            )
            try:
                self.template.spawn(
                    seq, [req_r, resp_w, out_w, err_w],
                    max_message_bytes=self.settings.max_message_bytes,
                )  # fmt: skip
            except OSError:
                interpreter.close()
                return  # the template is gone: its EOF is being handled
            finally:
                for fd in (req_r, resp_w, out_w, err_w):
                    os.close(fd)
            self._all[seq] = interpreter
            self._starting[seq] = interpreter
            self._selector.register(resp_r, selectors.EVENT_READ, ("reply", interpreter))
            for fd, kind in ((out_r, "out"), (err_r, "err")):
                os.set_blocking(fd, False)
                self._selector.register(fd, selectors.EVENT_READ, (kind, interpreter))

    def _reconcile(self, now: float) -> None:
        if (
            self._initial is None
            or not self._initial.is_set()
            or self._initial_error is not None
            or self._stop_deadline is not None
            or now < self._respawn_at
        ):
            return
        if self.template is None:
            try:
                self._start_template()
            except errors.SnakepoolError as exc:
                log.error("cannot restart the template: %s", exc.message)
                self._count_restart()
                return
        with self.pool._lock:
            live = len(self.pool._members)
        missing = self.settings.pool_size - live - len(self._starting)
        if missing > 0:
            self.pool._counts["restarts"] += missing
            self._spawn(missing)

    def _count_restart(self) -> None:
        """Record an unplanned restart; past the intensity, back off and, if nothing is
        left serving, make the pool answer ``PoolUnavailable``."""
        now = time.monotonic()
        delay = self._intensity.record(now)
        if delay is None:
            return
        self._respawn_at = max(self._respawn_at, now + delay)
        message = (
            f"{len(self._intensity)} interpreter restarts within "
            f"restart_period={self.settings.restart_period:g}s "
            f"(restart_intensity={self.settings.restart_intensity}); backing off {delay:g}s"
        )
        log.error("pool %s: %s", self.pool.run_id, message)
        self.pool._set_unavailable(errors.PoolUnavailable(message, retry_after=delay))
        self.pool.observer.safely("on_unavailable", delay)

    # ------------------------------------------------------------- events

    def _on_template_events(self) -> None:
        assert self.template is not None
        for event in self.template.events():
            op = event.get("op")
            if op == "spawned":
                interpreter = self._all.get(event["id"])
                if interpreter is not None:
                    interpreter.attach(event["pid"])
                    self._by_pid[event["pid"]] = interpreter
            elif op == "exited":
                interpreter = self._by_pid.pop(event["pid"], None)
                if interpreter is not None:
                    self._on_exit(interpreter, event["status"])
            elif op == "spawn_failed":
                interpreter = self._starting.get(event["id"])
                if interpreter is not None:
                    self._start_failed(interpreter, f"fork failed: {event.get('error')}")
            elif op == "eof":
                self._on_template_death()
                return

    def _on_reply(self, interpreter: Interpreter) -> None:
        try:
            message = interpreter.channel.feed()
        except (ChannelClosed, wire.DecodeError) as exc:
            self._selector.unregister(interpreter.channel.read_fd)
            reason = "EOF" if isinstance(exc, ChannelClosed) else f"protocol violation: {exc}"
            if interpreter.seq in self._starting:
                self._start_failed(interpreter, f"{reason} before the readiness handshake")
            else:
                self._checking.pop(interpreter.seq, None)
                interpreter.kill()
                self.pool._discard(interpreter, interpreter.crashed(f"health ping: {reason}"))
            return
        if message is None:
            return
        if interpreter.seq in self._starting and isinstance(message, wire.Ready):
            self._on_ready(interpreter, message)
        elif interpreter.seq in self._checking and isinstance(message, wire.Reply):
            rid, _ = self._checking[interpreter.seq]
            self._end_check(interpreter)
            if message.id == rid and message.ok:
                self.pool._release(interpreter)
            else:
                interpreter.kill()
                self.pool._discard(interpreter, interpreter.crashed("bad health ping reply"))

    def _on_ready(self, interpreter: Interpreter, ready: wire.Ready) -> None:
        del self._starting[interpreter.seq]
        self._selector.unregister(interpreter.channel.read_fd)
        if interpreter.pid is None:
            interpreter.attach(ready.pid)
            self._by_pid[ready.pid] = interpreter
        interpreter.commands = ready.commands
        interpreter.ready_at = interpreter.last_used = time.monotonic()
        self.pool._admit(interpreter)
        self.pool.observer.safely(
            "on_interpreter_ready", ready.pid, interpreter.seq,
            interpreter.ready_at - interpreter.spawned_at,
        )  # fmt: skip
        self.pool.registry.record(run_id=self.pool.run_id, role="interpreter", pid=ready.pid)
        if self._initial is not None and not self._initial.is_set():
            with self.pool._lock:
                ready_count = len(self.pool._members)
            if ready_count >= self.settings.pool_size:
                self._initial.set()

    def _on_exit(self, interpreter: Interpreter, status: int) -> None:
        interpreter.exit_status = status
        interpreter.exited.set()
        assert interpreter.pid is not None
        self.pool.registry.forget(self.pool.run_id, interpreter.pid)
        exit_code, signum, _ = errors.describe_exit(status)
        self.pool.observer.safely("on_interpreter_exit", interpreter.pid, exit_code, signum)
        self._drain_output(interpreter)
        if self._stop_deadline is not None and interpreter.state is not State.BUSY:
            self._starting.pop(interpreter.seq, None)
            interpreter.state = State.DEAD
            self._dispose(interpreter)  # stopping: an exit is expected, not a crash
        elif interpreter.seq in self._starting:
            self._start_failed(interpreter, "it exited before the readiness handshake")
        elif interpreter.state in (State.IDLE, State.CHECKING):
            self._end_check(interpreter)
            self.pool._discard(interpreter, interpreter.crashed("it died while idle", wait=False))
        elif interpreter.state in (State.RETIRING, State.DEAD):
            self._dispose(interpreter)
        # BUSY: the caller sees EOF and discards it; disposal follows from "left".

    def _on_left(self, interpreter: Interpreter) -> None:
        self._end_check(interpreter)
        if interpreter.state is State.RETIRING:
            interpreter.channel.close_request_pipe()  # clean exit on EOF
            interpreter.spawned_at = time.monotonic()  # reused as the retire clock
        if interpreter.exited.is_set():
            self._dispose(interpreter)

    def _on_template_death(self) -> None:
        template, self.template = self.template, None
        if template is None:
            return
        assert template.sock is not None
        self._selector.unregister(template.sock)
        for fd in (template.out_fd, template.err_fd):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        status = template.stop(1.0)
        if self._stop_deadline is not None:
            return
        log.error("the template process died (status %s); its interpreters die with it", status)
        for interpreter in list(self._all.values()):
            self._by_pid.pop(interpreter.pid or -1, None)
            interpreter.exited.set()
            self._on_exit_unknown(interpreter)
        self._count_restart()

    def _on_exit_unknown(self, interpreter: Interpreter) -> None:
        if interpreter.seq in self._starting:
            self._start_failed(interpreter, "the template died")
        elif interpreter.state in (State.IDLE, State.CHECKING):
            self._end_check(interpreter)
            self.pool._discard(interpreter, interpreter.crashed("the template died", wait=False))
        elif interpreter.state in (State.RETIRING, State.DEAD):
            self._dispose(interpreter)

    def _start_failed(self, interpreter: Interpreter, reason: str) -> None:
        self._starting.pop(interpreter.seq, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(interpreter.channel.read_fd)
        interpreter.kill()
        interpreter.state = State.DEAD
        self._drain_output(interpreter)
        output = "\n".join(interpreter.recent_output)
        message = f"{interpreter.label} failed to start: {reason}" + (
            f"\n--- its output ---\n{output}" if output else ""
        )
        if self._initial is not None and not self._initial.is_set():
            self._initial_error = errors.PoolUnavailable(message)
            self._initial.set()
        else:
            log.error("%s", message)
            self.pool._count("crashes")
            self._count_restart()
        if interpreter.exited.is_set():
            self._dispose(interpreter)

    # --------------------------------------------------------- health checks

    def _health_sweep(self, now: float) -> None:
        with self.pool._lock:
            idle = [m for m in self.pool._members.values() if m.state is State.IDLE]
        for interpreter in idle:
            if now - interpreter.last_used < self.settings.health_check_interval / 2:
                continue  # it just served a request: that was its health check
            reason = self.recycle_reason(interpreter)
            if reason is not None:
                self.pool._retire(interpreter, reason)
            elif self.pool._take_idle(interpreter):
                self._ping(interpreter, now)

    def _ping(self, interpreter: Interpreter, now: float) -> None:
        interpreter._next_id += 1
        rid = interpreter._next_id
        try:
            interpreter.channel.send(wire.Request(rid, "ping", {}).encode(), now + 1.0)
        except Exception:
            interpreter.kill()
            self.pool._discard(interpreter, interpreter.crashed("health ping not delivered"))
            return
        timeout = min(HEALTH_TIMEOUT_SECONDS, self.settings.request_timeout)
        self._checking[interpreter.seq] = (rid, now + timeout)
        self.pool._count("health_checks")
        self._selector.register(
            interpreter.channel.read_fd, selectors.EVENT_READ, ("reply", interpreter)
        )

    def _end_check(self, interpreter: Interpreter) -> None:
        if self._checking.pop(interpreter.seq, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(interpreter.channel.read_fd)

    # ---------------------------------------------------------------- output

    def _on_output(self, fd: int, kind: str, interpreter: Interpreter | None) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(fd)
        label = interpreter.label if interpreter else f"template (pid {self._template_pid()})"
        self._output.feed(
            fd,
            data,
            stream="stdout" if kind == "out" else "stderr",
            label=label,
            recent=interpreter.recent_output if interpreter else None,
            final=not data,
        )

    def _drain_output(self, interpreter: Interpreter) -> None:
        for fd, kind in ((interpreter.out_fd, "out"), (interpreter.err_fd, "err")):
            if fd >= 0 and fd in self._selector.get_map():
                for _ in range(64):  # bounded: a grandchild may hold the pipe open
                    self._on_output(fd, kind, interpreter)
                    if fd not in self._selector.get_map():
                        break

    def _template_pid(self) -> int | None:
        return self.template.pid if self.template else None

    # ------------------------------------------------------------- shutdown

    def _dispose(self, interpreter: Interpreter) -> None:
        if self._all.pop(interpreter.seq, None) is None:
            return
        self._drain_output(interpreter)
        for fd in (interpreter.out_fd, interpreter.err_fd, interpreter.channel.read_fd):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            self._output.forget(fd)
        interpreter.close()

    def _begin_stop(self) -> None:
        for interpreter in list(self._all.values()):
            if interpreter.state in (State.IDLE, State.RETIRING, State.DEAD, State.STARTING):
                interpreter.channel.close_request_pipe()

    def _finish(self) -> None:
        """Kill what is left, stop the template, close everything, end the loop."""
        self._running = False
        if self.template is not None:
            template, self.template = self.template, None
            for fd in (template.sock, template.out_fd, template.err_fd):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fd)  # type: ignore[arg-type]
            template.stop(2.0)  # SIGKILLs any interpreter still running
            if template.pid is not None:
                self.pool.registry.forget(self.pool.run_id, template.pid)
        for interpreter in list(self._all.values()):
            interpreter.kill()
            interpreter.exited.set()
            self._dispose(interpreter)

    def _close_own_fds(self) -> None:
        if self._wake_r < 0:
            return
        self._finalizer.detach()
        _close_quietly(self._selector, self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1


def _close_quietly(selector: selectors.BaseSelector, *fds: int) -> None:
    with contextlib.suppress(Exception):
        selector.close()
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
