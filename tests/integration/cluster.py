"""Real worker nodes for the distributed tests: `snakepool worker` processes on real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import Keys
from snakepool.tasks.client import Client
from snakepool.tasks.worker.broker_url import kombu_url

ROOT = Path(__file__).resolve().parents[2]
#: Marks every process a cluster starts (checked for leftovers when the cluster stops).
CLUSTER_MARKER = "SNAKEPOOL_TEST_CLUSTER"


@dataclass
class NodeProcess:
    lane: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    """Starts and stops worker nodes; every node shares one Redis and one registry."""

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        adapter: str,
        pool_size: int = 2,
        env: dict[str, str] | None = None,
    ):
        self.redis_url = redis_url
        self.workdir = workdir
        self.marker = f"cluster-{os.getpid()}-{time.monotonic_ns()}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SNAKEPOOL_REDIS_URL": redis_url,
            "SNAKEPOOL_ADAPTER": adapter,
            "SNAKEPOOL_POOL_SIZE": str(pool_size),
            "SNAKEPOOL_REGISTRY_DIR": str(workdir / "registry"),
            # Short breaker windows: a test that fails V3 on purpose must not divert
            # the next test's traffic for long.
            "SNAKEPOOL_BREAKER_WINDOW": "2",
            "SNAKEPOOL_BREAKER_COOLDOWN": "1",
            CLUSTER_MARKER: self.marker,
            **(env or {}),
        }
        self.env.pop("SNAKEPOOL_TEST_RUN", None)  # the per-test check is not for these
        self.nodes: list[NodeProcess] = []
        self.redis = redis.Redis.from_url(redis_url)
        self.keys = Keys()

    def start(self, lane: str, name: str, *, wait: bool = True) -> NodeProcess:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "snakepool.tasks.cli", "worker", "--lane", lane,
                 "--name", name, "--loglevel", "INFO"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
            )  # fmt: skip
        node = NodeProcess(lane, name, process, log)
        self.nodes.append(node)
        if wait:
            self.wait_ready(node)
        return node

    def wait_ready(self, node: NodeProcess, timeout: float = 60.0) -> None:
        """Block until the node's heartbeat appears (it is consuming right after)."""
        deadline = time.monotonic() + timeout
        while not self.redis.exists(self.keys.node(node.hostname)):
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {node.name} did not start:\n{node.log_tail()}")
            time.sleep(0.05)
        # The consumer starts after the bootstep: wait until it answers a ping.
        from celery import Celery

        app = Celery(broker=kombu_url(self.redis_url))  # ?password= as kombu reads it
        try:
            while not app.control.ping(destination=[node.hostname], timeout=0.5):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node.name} never consumed:\n{node.log_tail()}")
        finally:
            app.close()

    def kill(self, node: NodeProcess) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        self.nodes.remove(node)

    def stop(self) -> list[str]:
        """Stop every node (warm shutdown); return descriptions of any leftover process."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)
        self.redis.close()
        deadline = time.monotonic() + 5
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        described = [f"{p.pid}: {' '.join(p.cmdline())[:160]}" for p in left]
        for process in left:
            process.kill()
        return described

    def leftovers(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if (
                    process.environ().get(CLUSTER_MARKER) == self.marker
                    and process.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(process)
            except psutil.Error:
                continue
        return found


@contextmanager
def stopped_after(cluster: Cluster) -> Iterator[Cluster]:
    """``cluster``, stopped on the way out; fails if any of its processes is left behind."""
    try:
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert leftovers == [], f"processes left behind by the cluster: {leftovers}"


@contextmanager
def three_lanes(cluster: Cluster, suffix: str) -> Iterator[Cluster]:
    """``cluster`` with a router, a V3 and a V2-compat node (named ``router-<suffix>``,
    ``v3-<suffix>``, ``v2-<suffix>``), started together (see :func:`stopped_after`)."""
    with stopped_after(cluster):
        starting = [
            cluster.start(lane, f"{prefix}-{suffix}", wait=False)
            for lane, prefix in (("router", "router"), ("v3", "v3"), ("v2compat", "v2"))
        ]
        for node in starting:
            cluster.wait_ready(node)
        yield cluster


@contextmanager
def one_node(cluster: Cluster, name: str) -> Iterator[Cluster]:
    """``cluster`` with one node serving every lane (``--lane all``), named
    ``<name>-<pid>`` (see :func:`stopped_after`)."""
    with stopped_after(cluster):
        cluster.start("all", f"{name}-{os.getpid()}")
        yield cluster


@contextmanager
def one_node_client(cluster: Cluster, name: str) -> Iterator[Client]:
    """A :class:`Client` of ``cluster``'s Redis while :func:`one_node` runs."""
    with one_node(cluster, name):
        client = Client(redis_url=cluster.redis_url)
        try:
            yield client
        finally:
            client.close()


def change_flags(client: Client, change: Callable[[RolloutFlags], RolloutFlags]) -> None:
    """Apply ``change`` to the rollout flags and wait until every node has seen it."""
    client.wait_for_flags(client.flags.update(change, who="test", why="test").version)


def set_percent(client: Client, percent: int) -> None:
    """Set the rollout percentage and wait until every node has seen it."""
    client.wait_for_flags(client.set_rollout(percent, f"test {percent}")["version"])
