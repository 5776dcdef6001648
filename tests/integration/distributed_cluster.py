"""The five-node cluster of :mod:`tests.integration.test_distributed` (router, two V3 and
two V2-compat nodes, DSPy interpreters) and the helpers its tests share."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from snakepool.config.flags import RolloutFlags
from snakepool.tasks.client import Client
from snakepool.tasks.worker.node import live_nodes
from tests.integration.cluster import CLUSTER_MARKER, ROOT, Cluster

__all__ = ["change_flags", "five_nodes", "run_cli", "set_percent", "wait_for_closed_breakers"]


@contextlib.contextmanager
def five_nodes(redis_server: str, directory: Path) -> Iterator[Cluster]:
    """Started, ready, and at the end stopped with nothing left behind (asserted)."""
    cluster = Cluster(redis_server, directory, adapter="tests.adapters.cluster")
    # Zero-hop clients in this process route too: the same short breaker windows.
    saved = {
        k: os.environ.get(k) for k in ("SNAKEPOOL_BREAKER_WINDOW", "SNAKEPOOL_BREAKER_COOLDOWN")
    }
    os.environ.update(SNAKEPOOL_BREAKER_WINDOW="2", SNAKEPOOL_BREAKER_COOLDOWN="1")
    try:
        starting = [
            cluster.start(lane, name, wait=False)
            for lane, name in (("router", "router-1"), ("v3", "v3-a"), ("v3", "v3-b"),
                               ("v2compat", "v2-a"), ("v2compat", "v2-b"))
        ]  # fmt: skip
        for node in starting:
            cluster.wait_ready(node)
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        leftovers = cluster.stop()
    assert leftovers == [], f"processes left behind by the cluster: {leftovers}"


def change_flags(client: Client, change: Callable[[RolloutFlags], RolloutFlags]) -> None:
    client.wait_for_flags(client.flags.update(change, who="test", why="test").version)


def set_percent(client: Client, percent: int) -> None:
    client.wait_for_flags(client.set_rollout(percent, f"test {percent}")["version"])


def wait_for_closed_breakers(client: Client, timeout: float = 15.0) -> None:
    """Until no node sheds a lane (a previous test may have failed V3 on purpose)."""
    deadline = time.monotonic() + timeout
    while any(n.get("open_breakers") for n in live_nodes(client.redis, client.keys)):
        if time.monotonic() > deadline:
            raise AssertionError("circuit breakers stayed open")
        time.sleep(0.1)


def run_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cluster.env.items() if k != CLUSTER_MARKER}
    env["SNAKEPOOL_TEST_RUN"] = os.environ["SNAKEPOOL_TEST_RUN"]
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
