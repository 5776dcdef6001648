"""The pool's handle on its template process (see :mod:`snakepool.pool.interpreter.template`).

Each :class:`~pool.Pool` owns one template, so pools with different adapters, Python
executables or environments live side by side in one process — unlike stdlib
``multiprocessing``'s forkserver, which is one per process and keeps its first
environment and preload list.

The template kills whatever its interpreters start. If it dies without doing so
(killed itself), :meth:`Template.stop` kills what carries its marker
(:mod:`snakepool.pool.orphans`).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import threading
import time
from typing import Any

import msgpack
import psutil

from snakepool import errors
from snakepool.pool.orphans import MARKER_ENV, kill_marked, kill_sessions, new_marker

__all__ = ["Template"]


class Template:
    """Starts the template process and talks to it over a SEQPACKET socket.

    Args:
        run_id: The pool's run id (the registry's marker on every process).
        adapter: Dotted path of the adapter.
        mode: ``fork`` (preload the adapter, fork interpreters) or ``spawn``.
        python: Interpreter executable.
        env: Environment of the template and so of every interpreter.
        preload: Extra modules to import in the template before forking.
    """

    def __init__(
        self,
        *,
        run_id: str,
        adapter: str,
        mode: str,
        python: str,
        env: dict[str, str],
        preload: tuple[str, ...] = (),
    ) -> None:
        self.run_id = run_id
        self.adapter = adapter
        self.mode = mode
        self.python = python
        self.env = env
        self.preload = preload
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.out_fd = self.err_fd = -1
        self.commands: dict[str, dict[str, bool]] | None = None
        #: In the environment of the template and everything below it.
        self.marker = new_marker(run_id)
        # Its create time as psutil sees it (not time.time(): psutil derives create
        # times from the boot time, which can be a second or more off the wall clock).
        self._created = 0.0
        # Caller threads ask for kills while the supervisor thread spawns and stops.
        self._send_lock = threading.Lock()
        #: Its live interpreters, pid → psutil create time (each leads a session).
        self._interpreters: dict[int, float] = {}

    @property
    def pid(self) -> int | None:
        """The template's pid once started."""
        return self.process.pid if self.process else None

    def start(self, timeout: float) -> None:
        """Start the process and wait for its hello (the adapter imported).

        Raises:
            ConfigError: the adapter could not be imported.
            PoolUnavailable: no hello within ``timeout``, or the process died.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        argv = [
            self.python, "-m", "snakepool.pool.interpreter.template",
            "--run-id", self.run_id, "--adapter", self.adapter, "--mode", self.mode,
            "--ctl-fd", str(theirs.fileno()), "--python", self.python,
            "--preload", ",".join(self.preload),
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                argv,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env={**self.env, MARKER_ENV: self.marker},
                start_new_session=True,  # Ctrl-C goes to the pool, which stops us in order
            )
        except OSError as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            ours.close()
            raise errors.ConfigError(
                f"cannot start the interpreter executable {self.python!r}: {exc}",
                setting="PYTHON",
            ) from None
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        self.sock, self.out_fd, self.err_fd = ours, out_r, err_r
        with contextlib.suppress(psutil.Error):
            self._created = psutil.Process(self.process.pid).create_time()
        hello = self._wait_hello(time.monotonic() + timeout)
        self.commands = hello.get("commands")

    def _wait_hello(self, deadline: float) -> dict[str, Any]:
        assert self.sock is not None
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                break
            messages = self.events()
            for message in messages:
                if message.get("op") == "hello":
                    return message
                if message.get("op") == "failed":
                    detail = message.get("traceback") or message.get("error")
                    self.stop(0.5)
                    raise errors.ConfigError(
                        f"adapter {self.adapter!r} failed to load: {message.get('error')}",
                        setting="ADAPTER",
                        remote_traceback=detail,
                    )
            if any(message.get("op") == "eof" for message in messages):
                break  # it died before saying hello
        self.stop(0.5, keep_output=True)
        stderr = self._drain_stderr()
        self._close_output()
        raise errors.PoolUnavailable(
            f"the template for {self.adapter!r} did not start"
            + (f"; its stderr: {stderr}" if stderr else ""),
        )

    def _drain_stderr(self) -> str:
        chunks = []
        with contextlib.suppress(OSError):
            os.set_blocking(self.err_fd, False)
            while chunk := os.read(self.err_fd, 1 << 16):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()[-2000:]

    def spawn(self, seq: int, fds: list[int], *, max_message_bytes: int) -> None:
        """Ask for one interpreter; its pipe ends go along as SCM_RIGHTS.

        Raises:
            OSError: the template is gone.
        """
        message = msgpack.packb({"op": "spawn", "id": seq, "max_message_bytes": max_message_bytes})
        with self._send_lock:
            if self.sock is None:
                raise BrokenPipeError("template stopped")
            socket.send_fds(self.sock, [message], fds)

    def kill_interpreter(self, seq: int, pid: int) -> None:
        """Ask the template to SIGKILL interpreter ``seq`` (pid ``pid``) and its group.

        Reuse-safe without a pidfd: the template is the parent and acts only on a child
        it has not reaped, spawned under this ``seq``. A no-op once the template is
        stopped (so are its children).
        """
        message = msgpack.packb({"op": "kill", "id": seq, "pid": pid})
        with self._send_lock, contextlib.suppress(OSError):
            if self.sock is not None:
                self.sock.send(message)

    def events(self) -> list[dict[str, Any]]:
        """Every message waiting on the socket; ``[{"op": "eof"}]`` once it is gone."""
        if self.sock is None:
            return [{"op": "eof"}]
        received: list[dict[str, Any]] = []
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return received
            except OSError:
                data = b""
            if not data:
                received.append({"op": "eof"})
                return received
            message = msgpack.unpackb(data, raw=False)
            self._note(message)
            received.append(message)

    def _note(self, message: dict[str, Any]) -> None:
        """Keep track of the live interpreters (for :meth:`_kill_leftovers`)."""
        pid = message.get("pid")
        if not isinstance(pid, int):
            return
        if message.get("op") == "spawned":
            with contextlib.suppress(psutil.Error):
                self._interpreters[pid] = psutil.Process(pid).create_time()
        elif message.get("op") == "exited":
            self._interpreters.pop(pid, None)

    def stop(self, timeout: float, *, keep_output: bool = False) -> int | None:
        """Ask the template to kill its interpreters and exit; reap it. Returns its status.

        If it did not exit cleanly (it was killed, or had to be), whatever its
        interpreters started is killed here, found by the template's marker.
        """
        with self._send_lock:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.send(msgpack.packb({"op": "stop"}))
                self.sock.close()  # EOF alone makes it stop too
                self.sock = None
        status = None
        if self.process is not None:
            try:
                status = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                status = self.process.wait()
            if status != 0:
                self._kill_leftovers()
        if not keep_output:
            self._close_output()
        return status

    def _kill_leftovers(self) -> None:
        """Kill every process carrying this template's marker, and every process left in
        the session of one of its interpreters (one that cleared its environment): it
        died without doing so."""
        kill_marked(lambda marker: marker == self.marker, since=self._created)
        kill_sessions(dict(self._interpreters))  # a copy: events() may add meanwhile
        self._interpreters.clear()

    def _close_output(self) -> None:
        for fd in (self.out_fd, self.err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.out_fd = self.err_fd = -1

    def poll(self) -> int | None:
        """The template's exit status if it has exited (reaping it), else None."""
        return self.process.poll() if self.process else None
