"""The template process (zygote): imports the adapter once, then forks interpreters.

Started by the pool as ``python -m snakepool.pool.interpreter.template --run-id … --adapter …``
with one end of a ``SOCK_SEQPACKET`` control socket. Each ``spawn`` message carries the
new interpreter's four pipe ends as ``SCM_RIGHTS``; the template forks, the child wires
them up and enters :func:`snakepool.pool.interpreter.server.serve`, the template closes its copies
(so pipe EOF still means "that interpreter is gone") and reports the pid. It reaps its
children and reports every exit status, which is how the pool learns exit codes and
signals of processes it is not the parent of.

::

    pool process ──ctl socket (msgpack + fds)──► template ──fork──► interpreter 1..N
                 ◄── hello / spawned / exited ──            (PR_SET_PDEATHSIG → template)

The template exits, killing its interpreters, when the control socket reaches EOF or
its parent changes: so a SIGKILLed pool leaves nothing behind. With ``--mode spawn`` it
imports nothing and each child ``exec``s a fresh ``python -m snakepool.pool.interpreter.server``,
for adapters that are not fork-safe.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

import msgpack

from snakepool.pool.interpreter.adapter import CommandTable, load_adapter
from snakepool.pool.interpreter.server import prepare_child, serve

__all__ = ["main"]

#: How often the template checks that its parent is still the pool process.
PARENT_CHECK_SECONDS = 1.0


class _Template:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.ctl = socket.socket(fileno=options.ctl_fd)
        self.parent = os.getppid()
        self.children: set[int] = set()
        self.table: CommandTable | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.ctl.send(msgpack.packb(message, use_bin_type=True))
        except OSError:
            self.shutdown()

    def load(self) -> bool:
        try:
            if self.options.mode != "fork":
                # Spawned interpreters import it themselves; check it is there at all.
                import importlib.util

                module = self.options.adapter
                if importlib.util.find_spec(module) is None:
                    module = module.rpartition(".")[0]
                    if not module or importlib.util.find_spec(module) is None:
                        raise ModuleNotFoundError(f"No module named {self.options.adapter!r}")
                return True
            for module in filter(None, self.options.preload.split(",")):
                __import__(module)
            self.table = load_adapter(self.options.adapter)
        except BaseException as exc:
            self.send(
                {
                    "op": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )
            return False
        # Move everything imported so far out of the collector's reach: a collection
        # in a child would otherwise touch (and so copy) every shared page.
        gc.freeze()
        return True

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        if not self.load():
            return 2
        commands = self.table.describe() if self.table else None
        self.send({"op": "hello", "pid": os.getpid(), "commands": commands})
        selector = selectors.DefaultSelector()
        selector.register(self.ctl, selectors.EVENT_READ, "ctl")
        selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            events = selector.select(PARENT_CHECK_SECONDS)
            if os.getppid() != self.parent:
                self.shutdown()
            for key, _ in events:
                if key.data == "wake":
                    os.read(self.wake_r, 4096)
                    self.reap()
                else:
                    self.handle_ctl(selector)
            self.reap()  # a SIGCHLD may have arrived while forking

    def handle_ctl(self, selector: selectors.BaseSelector) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 8)
        except OSError:
            data, fds = b"", []
        if not data:
            self.shutdown()
        message = msgpack.unpackb(data, raw=False)
        op = message.get("op")
        if op == "spawn":
            self.spawn(message, fds, selector)
        elif op == "stop":
            self.shutdown()
        else:
            for fd in fds:
                os.close(fd)

    def spawn(
        self, message: dict[str, Any], fds: list[int], selector: selectors.BaseSelector
    ) -> None:
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            self.send({"op": "spawn_failed", "id": message.get("id"), "error": "need 4 fds"})
            return
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            self.send({"op": "spawn_failed", "id": message.get("id"), "error": str(exc)})
            return
        if pid == 0:  # the new interpreter; never returns
            selector.close()
            self.child(fds, message)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self.send({"op": "spawned", "id": message["id"], "pid": pid})

    def child(self, fds: list[int], message: dict[str, Any]) -> None:
        code = 1
        try:
            req_r, resp_w, out_w, err_w = fds
            self.ctl.close()
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
            prepare_child()
            if os.getppid() != self.options.self_pid:
                os._exit(4)  # the template died before PDEATHSIG was armed
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            limit = int(message["max_message_bytes"])
            if self.table is not None:
                code = serve(req_r, resp_w, self.table, max_message_bytes=limit)
            else:
                os.set_inheritable(req_r, True)
                os.set_inheritable(resp_w, True)
                python = self.options.python or sys.executable
                os.execv(python, [
                    python, "-m", "snakepool.pool.interpreter.server",
                    "--req-fd", str(req_r), "--resp-fd", str(resp_w),
                    "--adapter", self.options.adapter,
                    "--max-message-bytes", str(limit),
                    "--expected-ppid", str(self.options.self_pid),
                    "--run-id", self.options.run_id,
                ])  # fmt: skip
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status)})

    def shutdown(self) -> None:
        """Kill every interpreter and exit: the pool is gone or asked us to stop."""
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Run a template until the pool closes the control socket."""
    parser = argparse.ArgumentParser(prog="python -m snakepool.pool.interpreter.template")
    parser.add_argument("--run-id", required=True)  # the registry's marker
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--mode", choices=("fork", "spawn"), default="fork")
    parser.add_argument("--ctl-fd", type=int, required=True)
    parser.add_argument("--python", default="")
    parser.add_argument("--preload", default="")
    options = parser.parse_args(argv)
    options.self_pid = os.getpid()
    return _Template(options).run()


if __name__ == "__main__":
    sys.exit(main())
