"""A whole lane lost (issue 9 item 5): rollout 50 %, every V3 node killed.

Once their heartbeats expire, the router and the zero-hop client send V3's share to
V2-compat (within 15 s of the last heartbeat); the audit trail and ``status`` say so;
what was queued on V3 meanwhile runs when a V3 node returns, and V3 gets its traffic
back. Before the fix, 25 of 40 requests went on being sent to the ``v3`` queue and never
resolved. (Requests *running* on a killed node are issue 9 item 3, node-death recovery:
the load pauses around the kill so that none is.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepool.tasks.client import Client
from snakepool.tasks.worker.status import collect_status
from tests.chaos.harness import ADAPTER, Load, Run, pick, publish, wait_until
from tests.integration.cluster import Cluster

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(pick(150, 600)),
]

#: Seconds after the last heartbeat by which every new request must avoid the dead lane.
SHED_WITHIN = 15.0


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(redis_url, tmp_path, adapter=ADAPTER, pool_size=2)
    try:
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert leftovers == [], f"processes left behind: {leftovers}"


def test_a_lost_lane_sheds_to_the_other_and_gets_its_traffic_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    run = Run("lane loss", tmp_path / "starts.log")
    names = [("router", "router-1")] + [("v3", f"v3-{i}") for i in range(1, pick(2, 4))]
    names += [("v2compat", f"v2-{i}") for i in range(1, pick(2, 3))]
    nodes = [cluster.start(lane, name, wait=False) for lane, name in names]
    for node in nodes:
        cluster.wait_ready(node, timeout=120)
    client = Client(redis_url=cluster.redis_url)
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        client.wait_for_flags(client.set_rollout(50, "chaos: lane loss")["version"])

        def send(i: int) -> None:
            via = (client, direct)[i % 2]
            args = run.tick_args(0.01)
            run.submit(via.routing, "tick", args, lambda: via.submit("tick", args))

        rate = pick(10.0, 20.0)
        load = Load(send, rate).start()
        wait_until(lambda: len(run.sent) >= rate * 2, 30, "two seconds of load")
        load.stop()
        run.resolve(timeout=60)  # nothing runs on V3 when it dies (see the docstring)
        assert {s.lane for s in run.sent} == {"v3", "v2compat"}

        killed_at = run.now()
        for node in [n for n in nodes if n.lane == "v3"]:
            cluster.kill(node)
        load = Load(send, rate).start()
        shed_after = wait_until(
            lambda: (
                collect_status(cluster.redis, None, "snakepool:")["shedding"].get("v3") is not None
            ),
            SHED_WITHIN,
            "status says v3 has no live node",
        )
        status = collect_status(cluster.redis, None, "snakepool:")
        assert status["lanes"]["v3"]["serving"] is False
        assert status["lanes"]["v3"]["live_nodes"] == 0
        # Load without V3 for a while after routing noticed (however slow the machine).
        detected_at = run.now()
        wait_until(lambda: run.now() > detected_at + pick(5.0, 25.0), 60, "load without V3")
        restarted_at = run.now()
        cluster.wait_ready(cluster.start("v3", "v3-back", wait=False), timeout=120)
        wait_until(lambda: run.now() > restarted_at + pick(6.0, 15.0), 60, "load with V3 back")
        load.stop()
        run.resolve(timeout=60)

        after = [s for s in run.sent if s.at >= killed_at]
        to_v3 = [s.at for s in after if s.lane == "v3" and s.at < restarted_at]
        last_to_dead_lane = max(to_v3, default=killed_at) - killed_at
        back = [s.at for s in after if s.lane == "v3" and s.at >= restarted_at]
        resumed_after = min(back) - restarted_at if back else None
        report = run.report(
            v3_nodes_killed=sum(1 for lane, _ in names if lane == "v3"),
            status_shows_v3_down_after_s=shed_after,
            last_request_sent_to_dead_lane_s=last_to_dead_lane,
            queued_on_dead_lane_and_run_later=len(to_v3),
            v3_traffic_back_after_s=resumed_after,
        )
        publish(report, __file__)
        assert report.lost == 0, [s.id for s in run.sent if s.lost]
        assert report.failed == {} and report.refused == {}, report.text()
        # The recovery time: no new request went to the dead lane 15 s after the kill
        # (the last heartbeat was at most that long ago).
        assert last_to_dead_lane <= SHED_WITHIN, report.text()
        # Once status said so (and every router's 1 s liveness cache has caught up),
        # every new request went to V2-compat, through the router and zero-hop alike.
        settled = killed_at + min(SHED_WITHIN, shed_after + 1.5)
        shed = [s for s in after if settled <= s.at < restarted_at]
        assert len(shed) >= rate * 2 and {s.via for s in shed} == {"router", "direct"}
        assert {s.lane for s in shed} == {"v2compat"}, report.text()
        assert resumed_after is not None and resumed_after <= 10, report.text()
        events = [h["details"].get("event") for h in client.flags.history()]
        assert "lane_down" in events and "lane_up" in events, events
        assert events.index("lane_up") < events.index("lane_down")  # newest first
        status = collect_status(cluster.redis, None, "snakepool:")
        assert status["shedding"] == {} and status["lanes"]["v3"]["serving"] is True
    finally:
        client.close()
        direct.close()
