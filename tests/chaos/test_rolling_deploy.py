"""Rolling deploy under load (issue 9 item 2): SIGTERM each node in turn, a replacement
started first, with 14 s requests running on the node being stopped → 0 lost, 0 failed.

Before the fix the node stopped its interpreters 10 s into the warm shutdown: the 14 s
request ended ``PoolUnavailable('the pool is stopped')``, acknowledged, so gone.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepool.tasks.client import Client
from snakepool.tasks.worker.app import LANE_TASKS
from tests.chaos.harness import ADAPTER, FULL, Load, Run, Sent, pick, publish, wait_until
from tests.integration.cluster import Cluster, NodeProcess

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(pick(180, 900)),
]

#: Seconds of the long requests: longer than the 10 s the old shutdown allowed.
LONG = 14.0
POOL_SIZE = 2


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(redis_url, tmp_path, adapter=ADAPTER, pool_size=POOL_SIZE)
    try:
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert leftovers == [], f"processes left behind: {leftovers}"


def start_all(cluster: Cluster, nodes: list[tuple[str, str]]) -> list[NodeProcess]:
    started = [cluster.start(lane, name, wait=False) for lane, name in nodes]
    for node in started:
        cluster.wait_ready(node, timeout=120)
    return started


def send_to_lane(run: Run, client: Client, lane: str, seconds: float) -> Sent:
    """A ``tick`` straight onto ``lane``'s queue (only that lane's nodes can take it)."""
    args = run.tick_args(seconds)
    return run.submit(lane, "tick", args, lambda: client.app.send_task(
        LANE_TASKS[lane], args=("tick", args, None), queue=lane,
    ))  # fmt: skip


def test_rolling_deploy_loses_and_fails_nothing(cluster: Cluster, tmp_path: Path) -> None:
    run = Run("rolling deploy", tmp_path / "starts.log")
    v3 = [f"v3-{i}" for i in range(1, pick(2, 4))]
    v2 = [f"v2-{i}" for i in range(1, pick(2, 3))]
    old = start_all(cluster, [("router", "router-1")] + [("v3", n) for n in v3]
                    + [("v2compat", n) for n in v2])  # fmt: skip
    client = Client(redis_url=cluster.redis_url)
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    long_ones: list[Sent] = []
    try:
        client.wait_for_flags(client.set_rollout(50, "chaos: rolling deploy")["version"])

        def send(i: int) -> None:
            via = (client, direct)[i % 2]
            args = run.tick_args(0.02 * (i % 3))
            run.submit(via.routing, "tick", args, lambda: via.submit("tick", args))

        load = Load(send, rate=pick(10, 20)).start()
        stopping: list[NodeProcess] = []
        replacements: list[NodeProcess] = []
        # Lane nodes first, the router last; each in turn, its replacement started first.
        for node in sorted(old, key=lambda n: n.lane == "router"):
            if node.lane != "router":
                # Only this lane's old nodes consume: the long ones start on them.
                mine = [send_to_lane(run, client, node.lane, LONG) for _ in range(POOL_SIZE)]
                long_ones += mine
                wait_until(lambda mine=mine: all(run.starts()[s.id] for s in mine), 60,
                           f"long requests started on {node.name}")  # fmt: skip
            replacement = cluster.start(node.lane, f"{node.name}-next", wait=False)
            cluster.wait_ready(replacement, 120)
            replacements.append(replacement)
            node.process.send_signal(signal.SIGTERM)
            stopping.append(node)
            if FULL:  # strictly one at a time
                node.process.wait(60)
        for node in stopping:
            try:
                code = node.process.wait(60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{node.name} did not stop:\n{node.log_tail()}")
            assert code == 0, f"{node.name} exited {code}:\n{node.log_tail()}"
        load.stop()
        run.resolve(timeout=90)
        report = run.report(
            nodes_replaced=len(stopping),
            long_requests=len(long_ones),
            longest_drain_s=max(s.value["slept"] for s in long_ones if s.value),
        )
        publish(report, __file__)
        assert report.lost == 0, [s.id for s in run.sent if s.lost]
        assert report.failed == {} and report.refused == {}, report.text()
        assert report.duplicates == 0, report.text()
        for sent in long_ones:  # each ran to its end on the node being stopped
            assert sent.value["slept"] >= LONG, sent
            assert sent.lane in ("v3", "v2compat")
        for node in stopping:
            assert not cluster.redis.exists(cluster.keys.node(node.hostname))
            heartbeat = cluster.redis.get(
                cluster.keys.node(f"{node.name}-next@{node.hostname.split('@')[1]}")
            )
            assert heartbeat and json.loads(heartbeat)["stopping"] is False
    finally:
        client.close()
        direct.close()
