"""One interpreter as the pool sees it: its pipes, its pid, its state and its counters.

:meth:`Interpreter.call` is the request path: write a frame, wait for the reply with a
deadline, turn an error reply into the matching :mod:`snakepool.errors` exception. It never
decides the interpreter's fate; it raises :class:`Broken` and the pool retires it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psutil

from snakepool import errors
from snakepool.pool.interpreter import wire
from snakepool.pool.protocol import Channel, ChannelClosed, ChannelTimeout

__all__ = ["Broken", "Interpreter", "State"]

#: How long a caller whose interpreter died waits for the template's exit report.
EXIT_STATUS_WAIT_SECONDS = 1.0
#: Lines of an interpreter's recent output kept for error messages.
RECENT_OUTPUT_LINES = 30


class State(enum.Enum):
    """Where an interpreter is in its life."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"  # leased by a caller
    CHECKING = "checking"  # leased by the supervisor for a health ping
    RETIRING = "retiring"  # asked to exit cleanly
    DEAD = "dead"


class Broken(Exception):
    """The interpreter can no longer be used; ``error`` is what the caller should see.

    ``sent`` is False when the request never reached the interpreter (safe to retry).
    """

    def __init__(self, error: errors.SnakepoolError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


class Interpreter:
    """Handle on one interpreter process (created by the supervisor).

    Args:
        seq: Unique number within the pool (the "interpreter id" in logs).
        channel: Its request/reply pipes.
        out_fd: Read end of its stdout.
        err_fd: Read end of its stderr.
        killer: Kills ``(seq, pid)`` through its parent, the template
            (:meth:`~snakepool.pool.template.Template.kill_interpreter`): how
            :meth:`kill` works where no pidfd could be opened.
    """

    def __init__(
        self,
        *,
        seq: int,
        channel: Channel,
        out_fd: int,
        err_fd: int,
        killer: Callable[[int, int], None] | None = None,
    ) -> None:
        self.seq = seq
        self.killer = killer
        self.channel = channel
        self.out_fd = out_fd
        self.err_fd = err_fd
        self.state = State.STARTING
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.spawned_at = time.monotonic()
        self.ready_at: float | None = None
        self.last_used = self.spawned_at
        self.requests = 0
        self.commands: dict[str, dict[str, bool]] = {}
        self.exit_status: int | None = None
        self.exited = threading.Event()
        self.recent_output: deque[str] = deque(maxlen=RECENT_OUTPUT_LINES)
        self.retire_reason: str | None = None
        self._next_id = 0
        self._process: psutil.Process | None = None

    def __repr__(self) -> str:
        return f"<Interpreter #{self.seq} pid={self.pid} {self.state.value}>"

    @property
    def label(self) -> str:
        """How logs name it: ``interpreter 3 (pid 1234)``."""
        return f"interpreter {self.seq} (pid {self.pid})"

    def attach(self, pid: int) -> None:
        """Record the pid reported by the template; open a pidfd so kills are reuse-safe."""
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError, AttributeError):
            self.pidfd = None  # already gone: its exit report is on the way

    def call(
        self,
        command: str,
        args: dict[str, Any],
        timeout: float,
        *,
        session: str | None = None,
        transient: bool = False,
    ) -> Any:
        """Run one command (in the scope ``session``/``transient``) and return its result.

        Raises:
            InvalidArguments: an argument cannot cross the pipe (nothing was sent).
            SnakepoolError: the command's own error (the interpreter is fine).
            Broken: the interpreter timed out, crashed or broke the protocol.
        """
        self._next_id += 1
        rid = self._next_id
        try:
            framed = wire.framed_request(rid, command, args, session=session, transient=transient)
        except wire.EncodeError as exc:
            raise errors.InvalidArguments(str(exc), command=command) from None
        return self.call_framed(rid, framed, command, timeout)

    def call_framed(self, rid: int, framed: bytes, command: str, timeout: float) -> Any:
        """:meth:`call` with the request already encoded: ``framed`` is the whole frame
        of request ``rid`` (the pool encodes before it leases an interpreter).

        Raises:
            SnakepoolError: the command's own error (the interpreter is fine).
            Broken: the interpreter timed out, crashed or broke the protocol.
        """
        size = len(framed) - wire.HEADER.size
        if size > self.channel.limit:
            raise errors.PayloadTooLarge(
                f"request of {size} bytes exceeds max_message_bytes={self.channel.limit}",
                size=size,
                limit=self.channel.limit,
                direction="request",
            )
        deadline = time.monotonic() + timeout
        try:
            self.channel.send_frame(framed, deadline)
        except ChannelClosed:
            raise Broken(
                self.crashed("its pipe was closed before the request"), sent=False
            ) from None
        except ChannelTimeout:
            raise Broken(self.timed_out(command, timeout), sent=True) from None
        try:
            reply_id, ok, value = wire.decode_reply(self.channel.receive_payload(deadline))
        except ChannelTimeout:
            raise Broken(self.timed_out(command, timeout), sent=True) from None
        except ChannelClosed:
            raise Broken(self.crashed(f"it died while running {command!r}"), sent=True) from None
        except wire.DecodeError as exc:
            self.kill()
            raise Broken(
                self.crashed(f"protocol violation: {exc}", wait=False), sent=True
            ) from None
        if reply_id != rid:
            self.kill()
            raise Broken(
                self.crashed("protocol violation: reply to another request", wait=False),
                sent=True,
            )
        self.requests += 1
        if ok:
            return value
        raise _remote_error(value, command)

    def timed_out(self, command: str, timeout: float) -> errors.RequestTimeout:
        """Kill the interpreter and describe the timeout."""
        self.kill()
        return errors.RequestTimeout(
            f"{command!r} did not finish within {timeout:g}s; {self.label} was replaced",
            timeout=timeout,
            command=command,
            pid=self.pid,
        )

    def crashed(self, reason: str, *, wait: bool = True) -> errors.WorkerCrashed:
        """Describe a crash, with the exit code or signal once the template reports it."""
        if wait:
            self.exited.wait(EXIT_STATUS_WAIT_SECONDS)
        exit_code, signum, signame = errors.describe_exit(self.exit_status)
        how = (
            f"killed by {signame}"
            if signame
            else f"exit code {exit_code}"
            if exit_code is not None
            else "exit status unknown"
        )
        return errors.WorkerCrashed(
            f"{self.label} crashed ({how}): {reason}",
            exit_code=exit_code,
            signal=signum,
            signal_name=signame,
            reason=reason,
            pid=self.pid,
        )

    def kill(self) -> None:
        """SIGKILL the process; the template then kills its process group, so whatever
        it started dies with it (see :mod:`snakepool.pool.interpreter.reaper`).

        Through its pidfd when there is one; else through the template, its parent.
        Either way a reused pid is never hit.
        """
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                return
            except ProcessLookupError:
                return  # already gone (and reaped)
            except OSError:
                pass  # pidfd_send_signal unsupported here: ask the parent
        if self.pid is not None and self.killer is not None:
            self.killer(self.seq, self.pid)

    def rss_bytes(self) -> int | None:
        """The interpreter's resident memory, or None if it is gone."""
        if self.pid is None:
            return None
        try:
            if self._process is None:
                self._process = psutil.Process(self.pid)
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return None

    def close(self) -> None:
        """Release every fd we hold for it (after it is gone or retiring)."""
        self.channel.close()
        for fd in (self.out_fd, self.err_fd, self.pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.out_fd = self.err_fd = -1
        self.pidfd = None


def _remote_error(value: Any, command: str) -> errors.SnakepoolError:
    if not isinstance(value, dict):
        return errors.CommandFailed(f"{command!r} failed: {value!r}")
    reported = str(value.get("type"))
    cls = errors.error_class(reported) or errors.CommandFailed
    fields = value.get("data")
    if isinstance(fields, dict):  # an error of the tree, raised on purpose: its own fields
        data = {str(k): v for k, v in fields.items()}
        if "remote_type" in value:
            data["remote_type"] = value["remote_type"]
    else:  # the interpreter's own report (UnknownCommand, a plain exception, ...)
        data = {k: v for k, v in value.items() if k not in ("type", "message", "traceback")}
    if cls is errors.CommandFailed and reported != "CommandFailed":
        data.setdefault("remote_type", reported)  # a name outside the tree: say which
    if "traceback" in value:
        data["remote_traceback"] = value["traceback"]
    data.setdefault("command", command)  # a field the adapter named so is the adapter's
    return cls(str(value.get("message", "")), **data)
