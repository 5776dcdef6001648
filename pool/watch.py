"""Everything the supervisor thread waits on, in one selector.

* the template's control socket (``ctl``: spawned / exited / eof reports),
* the reply pipe of an interpreter that is starting or being health-checked (``reply``),
* every process's stdout and stderr, turned into log lines here,
* a wake-up pipe plus an inbox, through which other threads post work.

Like loky's executor manager, deaths are learnt from the processes' own channels
(the template's exit reports and EOFs), not by polling. The :class:`Watch` owns the
fds it watches for an interpreter until :meth:`Watch.dispose` closes them.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

from snakepool.pool.output import OutputLog
from snakepool.pool.template import Template
from snakepool.pool.worker import Interpreter

__all__ = ["Watch"]

#: Reads of one output pipe when draining a dead interpreter's output (a grandchild
#: may keep the pipe open for ever).
DRAIN_READS = 64


class Watch:
    """The supervisor's selector, wake-up pipe and inbox."""

    def __init__(self) -> None:
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
        self._output = OutputLog()
        self._template_label = "template"

    # ------------------------------------------------------------ any thread

    def post(self, *message: Any) -> None:
        """Queue ``message`` for the supervisor thread and wake it up."""
        self._inbox.append(message)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # --------------------------------------------------- the supervisor thread

    def wait(self, timeout: float) -> Iterator[tuple[str, Interpreter | None]]:
        """Wait up to ``timeout`` seconds; yield ``("ctl", None)`` and
        ``("reply", interpreter)`` events (output is logged on the way)."""
        registered = self._selector.get_map()
        for key, _ in self._selector.select(timeout):
            if registered.get(key.fd) is not key:
                continue  # unregistered while an earlier event of this batch was handled
            kind, interpreter = key.data
            if kind == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif kind in ("ctl", "reply"):
                yield kind, interpreter
            else:
                self._read_output(key.fd, kind, interpreter)

    def messages(self) -> Iterator[tuple[Any, ...]]:
        """The posted messages, oldest first, until the inbox is empty."""
        while self._inbox:
            yield self._inbox.popleft()

    def watch_template(self, template: Template) -> None:
        """Watch the template's control socket and output."""
        assert template.sock is not None
        self._template_label = f"template (pid {template.pid})"
        self._selector.register(template.sock, selectors.EVENT_READ, ("ctl", None))
        for fd, kind in ((template.out_fd, "out"), (template.err_fd, "err")):
            os.set_blocking(fd, False)
            self._selector.register(fd, selectors.EVENT_READ, (kind, None))

    def unwatch_template(self, template: Template) -> None:
        """Stop watching a template that is gone or going."""
        for fd in (template.sock, template.out_fd, template.err_fd):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)  # type: ignore[arg-type]

    def watch_interpreter(self, interpreter: Interpreter) -> None:
        """Watch a new interpreter's reply pipe (for its handshake) and its output."""
        self.watch_reply(interpreter)
        for fd, kind in ((interpreter.out_fd, "out"), (interpreter.err_fd, "err")):
            os.set_blocking(fd, False)
            self._selector.register(fd, selectors.EVENT_READ, (kind, interpreter))

    def watch_reply(self, interpreter: Interpreter) -> None:
        """Watch the reply pipe (a handshake or a health ping is expected)."""
        self._selector.register(
            interpreter.channel.read_fd, selectors.EVENT_READ, ("reply", interpreter)
        )

    def unwatch_reply(self, interpreter: Interpreter) -> None:
        """Stop watching the reply pipe: a caller is about to read it, or it is closed."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(interpreter.channel.read_fd)

    def drain_output(self, interpreter: Interpreter) -> None:
        """Log what is left in a (dead) interpreter's output pipes, boundedly."""
        for fd, kind in ((interpreter.out_fd, "out"), (interpreter.err_fd, "err")):
            if fd >= 0 and fd in self._selector.get_map():
                for _ in range(DRAIN_READS):
                    self._read_output(fd, kind, interpreter)
                    if fd not in self._selector.get_map():
                        break

    def dispose(self, interpreter: Interpreter) -> None:
        """Drain, unwatch and close every fd of an interpreter that is gone."""
        self.drain_output(interpreter)
        for fd in (interpreter.out_fd, interpreter.err_fd, interpreter.channel.read_fd):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            self._output.forget(fd)
        interpreter.close()

    def close(self) -> None:
        """Close the selector and the wake-up pipe (idempotent)."""
        if self._wake_r < 0:
            return
        self._finalizer.detach()
        _close_quietly(self._selector, self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1

    def _read_output(self, fd: int, kind: str, interpreter: Interpreter | None) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(fd)
        self._output.feed(
            fd,
            data,
            stream="stdout" if kind == "out" else "stderr",
            label=interpreter.label if interpreter else self._template_label,
            recent=interpreter.recent_output if interpreter else None,
            final=not data,
        )


def _close_quietly(selector: selectors.BaseSelector, *fds: int) -> None:
    with contextlib.suppress(Exception):
        selector.close()
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
