"""The processes of benchmark (i): a private redis-server, one snakepool worker node, one
plain Celery worker — started as users start them, stopped in order, nothing left behind.

::

    benchmark process ──► redis-server --port <free> --save "" --appendonly no
     (clients)        ──► python -m snakepool.tasks.cli worker --lane all --name bench-node \
                              --pool-size 2
                              └─ template ──fork──► 2 interpreters
                      ──► python -m celery -A benchmarks.plain_app worker -P threads -c 4 -Q plain …

Every child runs in its own session, so a terminal Ctrl-C reaches only the benchmark,
whose ``finally`` stops the workers (SIGTERM: Celery's warm shutdown, which stops the
node's pool) and then Redis. Each is also adopted by the :class:`Harness`, which kills
whatever is still running when the run ends, and every pid of the tree (templates and
interpreters included) goes to the leftover check.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import redis

from benchmarks.harness import Harness
from benchmarks.plain_app import PLAIN_QUEUE, URL_ENV
from snakepool.config.keys import Keys
from snakepool.tasks.local.launcher import free_port

__all__ = ["CeleryStack"]

#: Seconds for redis-server to answer, and for a worker node to publish its heartbeat.
REDIS_START_TIMEOUT = 10.0
NODE_START_TIMEOUT = 90.0
#: Seconds a worker gets for its warm shutdown after SIGTERM before SIGKILL.
STOP_GRACE = 20.0


class CeleryStack:
    """Start with :meth:`start`, always :meth:`stop` (idempotent), e.g. in a ``finally``.

    Args:
        harness: Owns the processes too (fallback kill, leftover check).
        pool_size: ``--pool-size`` of the node.
        node_name: ``--name`` of the node (its Celery hostname is ``NAME@host``).
    """

    def __init__(self, harness: Harness, *, pool_size: int = 2, node_name: str = "bench-node"):
        self.harness = harness
        self.pool_size = pool_size
        self.node_name = node_name
        self.hostname = f"{node_name}@{socket.gethostname()}"
        self.workdir = Path(tempfile.mkdtemp(prefix="snakepool-bench-celery-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        # The harness's environment (PYTHONPATH = our sys.path) without any SNAKEPOOL_*
        # setting of the caller's shell: the node must use our Redis and nothing else.
        env = {k: v for k, v in self.harness.env.items() if not k.startswith("SNAKEPOOL_")}
        env["SNAKEPOOL_REDIS_URL"] = self.url
        env["SNAKEPOOL_REGISTRY_DIR"] = str(self.workdir / "registry")  # private to the node
        env[URL_ENV] = self.url
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C is for the benchmark, which stops us in order
            )
        self.processes[name] = process
        self.harness.adopt(process)
        return process

    def log_tail(self, name: str, lines: int = 25) -> str:
        """The end of one process's output, for error messages."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        """Redis, then the node and the plain worker; returns once Redis answers and the
        node has published its heartbeat (its interpreters are ready). The plain worker
        is ready when it answers a first task (the benchmark's warm-up).

        Raises:
            RuntimeError: something did not start (with the end of its log).
        """
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._spawn("redis", [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
        ])  # fmt: skip
        client = redis.Redis.from_url(self.url)
        try:
            self._wait("redis", REDIS_START_TIMEOUT, lambda: bool(client.ping()))
            self._spawn("node", [
                sys.executable, "-m", "snakepool.tasks.cli", "worker", "--lane", "all",
                "--name", self.node_name, "--pool-size", str(self.pool_size),
            ])  # fmt: skip
            self._spawn("plain", [
                sys.executable, "-m", "celery", "-A", "benchmarks.plain_app", "worker",
                "-P", "threads", "-c", "4", "-Q", PLAIN_QUEUE,
                "--without-mingle", "--without-gossip",
            ])  # fmt: skip
            key = Keys().node(self.hostname)
            self._wait("node", NODE_START_TIMEOUT, lambda: bool(client.exists(key)))
        finally:
            client.close()
        self.track()

    def _wait(self, name: str, timeout: float, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                if ready():
                    return
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its log:\n{self.log_tail(name)}")
            time.sleep(0.05)

    def track(self) -> None:
        """Hand every process of the stack, descendants included, to the leftover check."""
        for process in self.processes.values():
            if process.poll() is None:
                self.harness.track_tree(process.pid)

    def node_tree(self) -> list[int]:
        """The node's pid, its template's and its interpreters'."""
        node = self.processes.get("node")
        if node is None or node.poll() is not None:
            return []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(node.pid).children(recursive=True)
            return [node.pid, *(child.pid for child in children)]
        return [node.pid]

    def stop(self) -> None:
        """Workers first (SIGTERM, then SIGKILL after the grace period), Redis last, so
        the node can still withdraw its heartbeat while it shuts down."""
        with contextlib.suppress(Exception):
            self.track()
        workers = [p for name, p in self.processes.items() if name != "redis"]
        last = [p for name, p in self.processes.items() if name == "redis"]
        for group in (workers, last):
            for process in group:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for process in group:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
                self.harness.reap(process, timeout=0)
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> CeleryStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
