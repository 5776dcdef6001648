"""The five-node cluster of :mod:`tests.integration.test_distributed` (router, two V3 and
two V2-compat nodes, DSPy interpreters) and the helpers its tests share."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepool.tasks.client import Client
from snakepool.tasks.worker.node import live_nodes
from tests.integration.cluster import CLUSTER_MARKER, ROOT, Cluster, stopped_after

__all__ = ["five_nodes", "run_cli", "wait_for_closed_breakers"]


@contextlib.contextmanager
def five_nodes(redis_server: str, directory: Path) -> Iterator[Cluster]:
    """Started, ready, and at the end stopped with nothing left behind (asserted)."""
    cluster = Cluster(redis_server, directory, adapter="tests.adapters.cluster")
    # Zero-hop clients in this process route too: the same short breaker windows.
    with pytest.MonkeyPatch.context() as patch, stopped_after(cluster):
        patch.setenv("SNAKEPOOL_BREAKER_WINDOW", "2")
        patch.setenv("SNAKEPOOL_BREAKER_COOLDOWN", "1")
        starting = [
            cluster.start(lane, name, wait=False)
            for lane, name in (("router", "router-1"), ("v3", "v3-a"), ("v3", "v3-b"),
                               ("v2compat", "v2-a"), ("v2compat", "v2-b"))
        ]  # fmt: skip
        for node in starting:
            cluster.wait_ready(node)
        yield cluster


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
