"""The template process and the interpreters forked from it, by seq and by pid.

The :class:`Spawner` creates each interpreter's four pipes, asks the template to fork
(or spawn) it with them, records every process in the registry, and turns the
template's reports into events for the supervisor. It holds every interpreter whose
fds are still open until :meth:`Spawner.dispose`. It decides nothing: whether to start,
replace or kill is the supervisor's business. Used only from the supervisor thread
(and before it starts).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from snakepool.config.settings import PoolSettings
from snakepool.pool.protocol import Channel
from snakepool.pool.registry import ProcessRegistry
from snakepool.pool.template import Template
from snakepool.pool.watch import Watch
from snakepool.pool.worker import Interpreter, State

__all__ = ["Spawner"]

log = logging.getLogger("snakepool.pool.supervisor")


class Spawner:
    """Owns the template and the handles of the interpreters it made.

    Args:
        settings: The pool's settings (adapter, start method, Python, limits).
        run_id: The pool's run id (the registry's marker).
        registry: Where every process is recorded.
        watch: The supervisor's selector, told of every fd to watch.
        env: Builds the template's environment (called at each template start).
        preload: Extra modules the template imports before forking.
    """

    def __init__(
        self,
        *,
        settings: PoolSettings,
        run_id: str,
        registry: ProcessRegistry,
        watch: Watch,
        env: Callable[[], dict[str, str]],
        preload: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.registry = registry
        self.watch = watch
        self._env = env
        self._preload = preload
        self.template: Template | None = None
        self._seq = itertools.count(1)
        self._all: dict[int, Interpreter] = {}  # every interpreter whose fds are open
        self._by_pid: dict[int, Interpreter] = {}

    def __len__(self) -> int:
        return len(self._all)

    def interpreters(self) -> list[Interpreter]:
        """Every interpreter whose fds are open."""
        return list(self._all.values())

    def get(self, seq: int) -> Interpreter | None:
        """The interpreter numbered ``seq``, if its fds are open."""
        return self._all.get(seq)

    def start_template(self) -> None:
        """Start a template and watch it.

        Raises:
            ConfigError, PoolUnavailable: it could not start (see :class:`Template`).
        """
        template = Template(
            run_id=self.run_id,
            adapter=self.settings.adapter,
            mode="fork" if self.settings.start_method == "forkserver" else "spawn",
            python=self.settings.python,
            env=self._env(),
            preload=self._preload,
        )
        template.start(self.settings.startup_timeout)
        self.template = template
        assert template.pid is not None
        self.registry.record(run_id=self.run_id, role="template", pid=template.pid)
        self.watch.watch_template(template)

    def spawn(self, count: int) -> list[Interpreter]:
        """Ask the template for ``count`` interpreters; return those it accepted."""
        spawned: list[Interpreter] = []
        for _ in range(count):
            if self.template is None or self.template.sock is None:
                break
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
                break  # the template is gone: its EOF is being handled
            finally:
                for fd in (req_r, resp_w, out_w, err_w):
                    os.close(fd)
            self._all[seq] = interpreter
            self.watch.watch_interpreter(interpreter)
            spawned.append(interpreter)
        return spawned

    def events(self) -> Iterator[tuple[str, Interpreter | None, Any]]:
        """The template's reports: ``("exited", interpreter, status)``,
        ``("spawn_failed", interpreter, error)`` and ``("eof", None, None)`` (the
        template died: stop reading). ``spawned`` reports are handled here."""
        assert self.template is not None
        for event in self.template.events():
            op = event.get("op")
            if op == "spawned":
                interpreter = self._all.get(event["id"])
                if interpreter is not None:
                    self.attach(interpreter, event["pid"])
            elif op == "exited":
                interpreter = self._by_pid.pop(event["pid"], None)
                if interpreter is not None:
                    assert interpreter.pid is not None
                    self.registry.forget(self.run_id, interpreter.pid)
                    yield "exited", interpreter, event["status"]
            elif op == "spawn_failed":
                interpreter = self._all.get(event["id"])
                if interpreter is not None:
                    yield "spawn_failed", interpreter, event.get("error")
            elif op == "eof":
                yield "eof", None, None
                return

    def attach(self, interpreter: Interpreter, pid: int) -> None:
        """Learn ``interpreter``'s pid (from the template's report or its handshake)."""
        if interpreter.pid is None:
            interpreter.attach(pid)
            self._by_pid[pid] = interpreter

    def ready(self, interpreter: Interpreter) -> None:
        """Record a ready interpreter in the registry."""
        assert interpreter.pid is not None
        self.registry.record(run_id=self.run_id, role="interpreter", pid=interpreter.pid)

    def template_died(self) -> int | None:
        """Forget a template that is gone (its interpreters die with it); its status."""
        template, self.template = self.template, None
        if template is None:
            return None
        self.watch.unwatch_template(template)
        self._by_pid.clear()
        return template.stop(1.0)

    def dispose(self, interpreter: Interpreter) -> None:
        """Close the fds of an interpreter that is gone (idempotent)."""
        if self._all.pop(interpreter.seq, None) is not None:
            self.watch.dispose(interpreter)

    def close_request_pipes(self, *states: State) -> None:
        """Close the request pipe of every interpreter in ``states``: each exits on EOF."""
        for interpreter in self.interpreters():
            if interpreter.state in states:
                interpreter.channel.close_request_pipe()

    def kill_retired_after(self, grace: float, now: float) -> None:
        """SIGKILL retiring interpreters still running ``grace`` seconds after their
        request pipe was closed (``spawned_at`` is reused as that clock)."""
        for interpreter in self.interpreters():
            if (
                interpreter.state is State.RETIRING
                and not interpreter.exited.is_set()
                and now - interpreter.spawned_at > grace
            ):
                log.warning("%s did not exit when retired; killing it", interpreter.label)
                interpreter.kill()

    def stop(self) -> None:
        """Stop the template (which SIGKILLs what still runs) and close every fd."""
        if self.template is not None:
            template, self.template = self.template, None
            self.watch.unwatch_template(template)
            template.stop(2.0)
            if template.pid is not None:
                self.registry.forget(self.run_id, template.pid)
        for interpreter in self.interpreters():
            interpreter.kill()
            interpreter.exited.set()
            self.dispose(interpreter)
