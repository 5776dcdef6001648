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

Whatever an interpreter started dies with it (:mod:`snakepool.pool.interpreter.reaper`):
each interpreter leads its own process group, which the template kills when the
interpreter exits, is killed or crashes — before reaping it, so the group id cannot
have been reused. The template is a child subreaper: a descendant that left its group
(``setsid``, double fork) comes back to it once orphaned, and it kills every such
adopted process at once (found on every child exit and every
:data:`ORPHAN_SCAN_SECONDS`). An interpreter may keep children it started for as long
as it lives; it may not leave detached daemons behind.

The template exits, killing every interpreter's group and everything it adopted, when
the control socket reaches EOF or its parent changes: so a SIGKILLed pool leaves nothing
behind. With ``--mode spawn`` it imports nothing and each child ``exec``s a fresh
``python -m snakepool.pool.interpreter.server``, for adapters that are not fork-safe.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from snakepool.pool.interpreter import core, prefork, reaper, rehearsal
from snakepool.pool.interpreter.adapter import CommandTable, load_adapter
from snakepool.pool.interpreter.server import handshake, prepare_child, serve

__all__ = ["main"]

#: How often the template checks that its parent is still the pool process.
PARENT_CHECK_SECONDS = 1.0
#: How often the template looks for adopted processes when no child exit woke it (a
#: double-forked daemon is adopted without any signal to the template).
ORPHAN_SCAN_SECONDS = 1.0
#: How long the template, when exiting, keeps killing and reaping what is left (the
#: pool kills it after 2 s and then sweeps by marker; this stays below that).
SHUTDOWN_REAP_SECONDS = 1.5


def _no_setup() -> None:
    pass


def _findable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it. ``a.b.Class`` is not a
    module: ``find_spec`` raises for it (``a.b`` has no ``__path__``) rather than
    answering None."""
    import importlib.util

    try:
        return bool(module) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class _Template:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.ctl = socket.socket(fileno=options.ctl_fd)
        self.parent = os.getppid()
        self.children: dict[int, Any] = {}  # pid → id of the interpreters not reaped yet
        self.own: set[int] = set()  # children the adapter's import started: not adopted
        self.table: CommandTable | None = None
        self.ready: Callable[[int], bytes] | None = None  # the handshake, packed ahead
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
                # Spawned interpreters import it themselves; check it is there at all
                # (``module`` or ``module.Class``).
                module = self.options.adapter
                if not _findable(module) and not _findable(module.rpartition(".")[0]):
                    raise ModuleNotFoundError(f"No module named {self.options.adapter!r}")
                return True
            for module in filter(None, self.options.preload.split(",")):
                __import__(module)
            self.table = load_adapter(self.options.adapter)
            self.ready = handshake(self.table)
            # What the import started is the adapter's own (never killed as adopted);
            # read before the rehearsal, whose leftovers are not.
            self.own = reaper.child_pids()
        except BaseException as exc:
            self.send(
                {
                    "op": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )
            return False
        self.prepare_heap()
        # Move everything imported so far out of the collector's reach: a collection
        # in a child would otherwise touch (and so copy) every shared page.
        gc.freeze()
        return True

    def prepare_heap(self) -> None:
        """Pack the code an interpreter's start runs (:mod:`~snakepool.pool.interpreter.rehearsal`),
        then fill the free blocks the import left, so that later allocations (ours, the
        interpreters') go to fresh pages instead of copying scattered shared ones.
        Optimisations: whatever goes wrong in them must not cost the start."""
        assert self.table is not None
        # Without the adapter's setup hook, and with the built-in ping even where the
        # adapter has its own: the rehearsal must not act on the world, nor wait on it.
        handlers = {**self.table.handlers, "ping": core.ping}
        quiet = dataclasses.replace(self.table, setup=_no_setup, handlers=handlers)
        try:
            rehearsal.pack_start(lambda fds, limit: self.interpreter(fds, limit, quiet))
        except Exception as exc:
            print(f"snakepool template: start not rehearsed: {exc!r}", file=sys.stderr)
        try:
            prefork.fill_free_blocks()
        except Exception as exc:
            print(f"snakepool template: heap not filled before forking: {exc!r}", file=sys.stderr)

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        reaper.become_subreaper()
        if not self.load():
            return 2
        commands = self.table.describe() if self.table else None
        self.send({"op": "hello", "pid": os.getpid(), "commands": commands})
        # poll, not a selector: it holds no descriptor, so a new interpreter has nothing
        # of it to close (closing a selector ran Python code freeing the template's
        # objects: pages every interpreter copied).
        poller = select.poll()
        poller.register(self.ctl.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        timeout_ms = int(min(PARENT_CHECK_SECONDS, ORPHAN_SCAN_SECONDS) * 1000)
        next_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
        while True:
            events = poller.poll(timeout_ms)
            if os.getppid() != self.parent:
                self.shutdown()
            for fd, _ in events:
                if fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                else:
                    self.handle_ctl()
            # Always, not only on a wake-up: a SIGCHLD may have arrived while forking.
            if self.reap() or time.monotonic() >= next_scan:
                self.kill_adopted()
                next_scan = time.monotonic() + ORPHAN_SCAN_SECONDS

    def handle_ctl(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 8)
        except OSError:
            data, fds = b"", []
        if not data:
            self.shutdown()
        message = msgpack.unpackb(data, raw=False)
        op = message.get("op")
        if op == "spawn":
            self.spawn(message, fds)
        elif op == "stop":
            self.shutdown()
        elif op == "kill":
            self.kill(message.get("pid"), message.get("id"))
        else:
            for fd in fds:
                os.close(fd)

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
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
            self.child(fds, message)
        for fd in fds:
            os.close(fd)
        self.children[pid] = message["id"]
        self.send({"op": "spawned", "id": message["id"], "pid": pid})

    def child(self, fds: list[int], message: dict[str, Any]) -> None:
        code = 1
        try:
            code = self.interpreter(fds, int(message["max_message_bytes"]), self.table)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def interpreter(self, fds: list[int], limit: int, table: CommandTable | None) -> int:
        """Become an interpreter on ``(req_r, resp_w, out_w, err_w)``: serve ``table``
        until EOF and return the exit code, or (spawn mode: no table) ``exec`` one."""
        req_r, resp_w, out_w, err_w = fds
        # The C close, not socket.socket.close: its Python bookkeeping writes the
        # template's socket object (a page copied); nothing here uses ctl again.
        super(socket.socket, self.ctl).close()
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
        if table is not None:
            return serve(req_r, resp_w, table, max_message_bytes=limit, ready=self.ready)
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

    def kill(self, pid: object, seq: object) -> None:
        """The pool's kill when it has no pidfd: reuse-safe here, as we are the parent
        (and the id tells a pid from the same pid reused by a later interpreter)."""
        if isinstance(pid, int) and pid in self.children and self.children[pid] == seq:
            reaper.kill_tree(pid)

    def reap(self) -> bool:
        """Reap every child that exited; report interpreters. True if anything was reaped.

        An interpreter's group is killed *between* noticing its exit and reaping it
        (``WNOWAIT``): until reaped, its pid — the group id — cannot be reused.
        """
        reaped = False
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return reaped
            if info is None or info.si_pid == 0:
                return reaped
            pid = info.si_pid
            if pid in self.children:
                reaper.kill_group(pid)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            reaped = True
            self.own.discard(pid)
            if pid in self.children:
                del self.children[pid]
                status = os.waitstatus_to_exitcode(status)
                self.send({"op": "exited", "pid": pid, "status": status})

    def kill_adopted(self) -> None:
        """Kill every child that is neither an interpreter nor the template's own: an
        orphaned descendant of an interpreter, adopted because we are its subreaper.
        Its death wakes us to reap it (and to adopt whatever it leaves behind)."""
        for pid in reaper.child_pids() - self.children.keys() - self.own:
            name = reaper.process_name(pid)
            reaper.kill_tree(pid)
            if name is not None:  # not a zombie: it was still running
                note = f"killed process {pid} ({name}), left behind by an interpreter"
                print(f"snakepool template: {note}", file=sys.stderr, flush=True)

    def shutdown(self) -> None:
        """Kill every interpreter's group and everything adopted, reap them, and exit:
        the pool is gone or asked us to stop. Exit status 3 if something would not die
        in time (the pool then kills what carries our marker), else 0."""
        for pid in self.children:
            reaper.kill_tree(pid)  # unreaped: each group id is still theirs
        deadline = time.monotonic() + SHUTDOWN_REAP_SECONDS
        while True:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass  # killed above: nobody needs the exit report any more
            left = reaper.child_pids()
            if not left or time.monotonic() >= deadline:
                break
            for pid in left:
                reaper.kill_tree(pid)  # adopted ones (or the adapter's own): still ours
            # Woken by the next SIGCHLD; the timeout only bounds a missed wake-up.
            with contextlib.suppress(OSError):
                if select.select([self.wake_r], [], [], 0.05)[0]:
                    os.read(self.wake_r, 4096)
        os._exit(3 if left else 0)


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
