"""Start and stop the local stack as processes: worker nodes, Flower, a Redis if needed.

Used by ``snakepool up`` (the compose topology as local processes) and by ``snakepool
demo`` against a real Redis. Everything started is stopped in reverse order, gently
(SIGTERM: Celery's warm shutdown) then firmly, so Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from snakepool.config.keys import Keys
from snakepool.errors import ConfigError, InvalidArguments, PoolUnavailable
from snakepool.tasks.worker.broker_url import kombu_url

__all__ = ["STOP_MARGIN", "Launcher", "ManagedProcess", "stop_grace_for"]

#: Seconds a node may take to start (template import + interpreters + consumer).
NODE_START_TIMEOUT = 90.0
#: Seconds a node gets after SIGTERM beyond its ``SHUTDOWN_GRACE`` (stopping its pool,
#: the last acknowledgements and results) before SIGKILL. compose.yaml's
#: ``stop_grace_period`` keeps the same margin (tests/unit/test_compose.py checks it).
STOP_MARGIN = 10.0
#: Seconds a process gets to stop after SIGTERM before SIGKILL, unless told otherwise:
#: the default ``SHUTDOWN_GRACE`` (``REQUEST_TIMEOUT`` 30 s + 5 s) plus the margin.
STOP_GRACE = 35.0 + STOP_MARGIN


def stop_grace_for(shutdown_grace: float | None) -> float:
    """Seconds to wait after SIGTERM for a node whose ``SHUTDOWN_GRACE`` is given: a warm
    shutdown lets started requests run that long, and the SIGKILL must not come first."""
    return STOP_GRACE if shutdown_grace is None else float(shutdown_grace) + STOP_MARGIN


@dataclass
class ManagedProcess:
    """One process the launcher started."""

    role: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None = None
    hostname: str = field(default="")
    #: A node's Prometheus port, when it serves one.
    metrics_port: int | None = None
    #: How it was started (what :meth:`Launcher.restart` runs again).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Configuration written to its standard input (redis-server's password: never argv).
    stdin_text: str | None = None

    def exit_description(self) -> str:
        """How it ended: ``killed by SIGKILL``, ``exit code 1`` (None: still running)."""
        code = self.process.poll()
        if code is None:
            return "running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit code {code}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for error messages."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Launcher:
    """Starts processes with one environment; :meth:`stop_all` stops them all.

    Args:
        env: Environment for every process (settings as ``SNAKEPOOL_*``).
        logdir: Where each process's output goes (``<name>.log``); None: inherit stdout.
        stop_grace: Seconds between SIGTERM and SIGKILL in :meth:`stop_all`; give
            :func:`stop_grace_for` the nodes' ``SHUTDOWN_GRACE``.
    """

    def __init__(
        self, env: dict[str, str], *, logdir: Path | None = None, stop_grace: float = STOP_GRACE
    ) -> None:
        self.env = env
        self.logdir = logdir
        self.stop_grace = stop_grace
        self.processes: list[ManagedProcess] = []

    def _spawn(
        self,
        role: str,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin_text: str | None = None,
    ) -> ManagedProcess:
        log = self.logdir / f"{name}.log" if self.logdir else None
        output = log.open("wb") if log else None
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                env={**self.env, **(env or {})},
                # Ctrl-C reaches only us, and we stop everything in order (Redis last);
                # if we die instead, each child gets SIGTERM from the kernel.
                start_new_session=True,
                preexec_fn=_terminate_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        finally:
            if output:
                output.close()
        if stdin_text is not None and process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(stdin_text.encode())
            process.stdin.close()
        managed = ManagedProcess(
            role, name, process, log, argv=argv, env=env or {}, stdin_text=stdin_text
        )
        self.processes.append(managed)
        return managed

    def restart(self, managed: ManagedProcess) -> ManagedProcess:
        """Start an exited process again, as it was started, in its place in the order
        (a node keeps its name and metrics port: compose's ``restart: unless-stopped``).

        Raises:
            InvalidArguments: it is still running, or not one of ours.
        """
        if managed not in self.processes or managed.process.poll() is None:
            raise InvalidArguments(f"{managed.name} is not an exited process of this launcher")
        index = self.processes.index(managed)
        self.processes.remove(managed)
        again = self._spawn(
            managed.role, managed.name, managed.argv, env=managed.env, stdin_text=managed.stdin_text
        )
        self.processes.remove(again)
        self.processes.insert(index, again)
        again.metrics_port, again.hostname = managed.metrics_port, managed.hostname
        return again

    def start_redis(
        self, port: int, *, username: str | None = None, password: str | None = None
    ) -> ManagedProcess:
        """A throwaway redis-server on ``port`` (no persistence), requiring ``password``
        (for ``username``, else the default user) when one is given.

        The password reaches redis-server as configuration on its standard input
        (``redis-server -``), never on its command line, which every local user can read.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "no Redis answers and redis-server is not installed", setting="REDIS_URL"
            )
        config = _auth_config(username, password)
        managed = self._spawn("redis", "redis", [
            binary, *(["-"] if config else []),
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        ], stdin_text=config)  # fmt: skip
        # Timeouts: what answers on the port must never hold this loop (up checks the
        # port first, but another process may take it in between).
        client = redis.Redis(
            port=port, username=username or None, password=password,
            socket_connect_timeout=1, socket_timeout=1,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            if time.monotonic() > deadline or managed.process.poll() is not None:
                raise PoolUnavailable(f"redis-server did not start: {managed.log_tail()}")
            time.sleep(0.05)
        client.close()
        return managed

    def start_node(
        self,
        lane: str,
        name: str,
        *,
        pool_size: int | None = None,
        metrics_port: int | None = None,
        quiet: bool = False,
    ) -> ManagedProcess:
        """``snakepool worker --lane LANE --name NAME`` (not waited for: see wait_nodes).

        Args:
            metrics_port: The node's Prometheus port (``--metrics-port``); None: the
                ``METRICS_PORT`` setting.
            quiet: ``--quiet``: no banner and no per-task INFO lines (``snakepool up``).
        """
        argv = [
            sys.executable,
            "-m",
            "snakepool.tasks.cli",
            "worker",
            "--lane",
            lane,
            "--name",
            name,
        ]
        if pool_size:
            argv += ["--pool-size", str(pool_size)]
        if quiet:
            argv.append("--quiet")
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port)]
        managed = self._spawn("node", name, argv)
        managed.metrics_port = metrics_port or None
        managed.hostname = f"{name}@{socket.gethostname()}"
        return managed

    def start_flower(self, broker_url: str, port: int) -> ManagedProcess:
        """Flower on 127.0.0.1:``port`` watching ``broker_url``."""
        # The URL (it may hold a password) goes in the environment, not on the command
        # line, where every user of the machine can read it.
        argv = [sys.executable, "-m", "celery", "flower", "--address=127.0.0.1", f"--port={port}"]
        env = {"CELERY_BROKER_URL": kombu_url(broker_url)}  # ?password= as kombu reads it
        return self._spawn("flower", "flower", argv, env=env)

    def wait_nodes(
        self, client: redis.Redis, keys: Keys, timeout: float = NODE_START_TIMEOUT
    ) -> None:
        """Until every started node has a heartbeat (its interpreters are ready)."""
        deadline = time.monotonic() + timeout
        for node in (p for p in self.processes if p.role == "node"):
            while not client.exists(keys.node(node.hostname)):
                if node.process.poll() is not None:
                    raise PoolUnavailable(f"node {node.name} exited:\n{node.log_tail()}")
                if time.monotonic() > deadline:
                    raise PoolUnavailable(f"node {node.name} not ready:\n{node.log_tail()}")
                time.sleep(0.05)

    def stop_all(self) -> None:
        """SIGTERM everything, wait up to ``stop_grace`` seconds, SIGKILL what is left;
        Redis last, so the nodes can still finish, acknowledge and withdraw their
        heartbeats while they shut down."""
        last = [m for m in self.processes if m.role == "redis"]
        first = [m for m in reversed(self.processes) if m.role != "redis"]
        for group in (first, last):
            for managed in group:
                if managed.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        managed.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace
            for managed in group:
                try:
                    managed.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    managed.process.kill()
                    managed.process.wait(5)
        self.processes.clear()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launching process dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    """Our environment plus ``SNAKEPOOL_<NAME>`` for each setting given."""
    env = dict(os.environ)
    env.update({f"SNAKEPOOL_{k.upper()}": v for k, v in settings.items()})
    return env


def _quoted(value: str) -> str:
    """``value`` as one double-quoted redis.conf argument (every byte but [A-Za-z0-9] as
    ``\\xHH``, so no quote, space, backslash or newline can end or split it)."""
    escaped = (
        chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in value.encode()
    )
    return '"' + "".join(escaped) + '"'


def _auth_config(username: str | None, password: str | None) -> str | None:
    """redis.conf lines making the server ask for ``password`` (None: no password)."""
    if not password:
        return None
    if username in (None, "", "default"):
        return f"requirepass {_quoted(password)}\n"
    user = f"user {_quoted(username)} on {_quoted('>' + password)} ~* &* +@all"
    return f"user default off\n{user}\n"
