"""On real nodes: what a caller sends never becomes an internal switch or a Redis key, and
observability (metrics, shadow records) never changes a request's outcome.

One small cluster for the module (a router, a V3 and a V2-compat node, one interpreter
each, the chaos adapter for a command that fails). Raw Celery messages stand for callers
that do not go through :class:`Client`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from celery.result import AsyncResult

from snakepool.config.flags import RolloutFlags
from snakepool.errors import CommandFailed, InvalidArguments
from snakepool.tasks.client import Client
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from snakepool.tasks.worker.options import SHADOW_HEADER
from tests.integration.cluster import Cluster, three_lanes

# The module's cluster starts (and at the end stops) three nodes inside the first and
# last tests' budgets.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(180),
]

#: What ``shadow:counts`` holds before the attempts to destroy it.
COUNTS = {b"compared": b"5", b"matched": b"4", b"mismatched": b"1"}


@pytest.fixture(scope="module")
def cluster(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        redis_server,
        tmp_path_factory.mktemp("safety"),
        adapter="snakepool.pool.interpreter.chaos",
        pool_size=1,
    )
    cluster.env["SNAKEPOOL_ENABLE_CHAOS"] = "1"
    with three_lanes(cluster, "s") as running:
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    client = Client(redis_url=cluster.redis_url)
    client.wait_for_flags(client.flags.update(lambda _: RolloutFlags(), who="t", why="t").version)
    yield client
    client.close()


def route_to(client: Client, lane: str, **shadow: Any) -> None:
    """All traffic to ``lane`` (0 or 100 %: a forced lane is never shadowed), seen by all."""
    percent = 100 if lane == "v3" else 0
    flags = client.flags.update(
        lambda f: replace(f, percent=percent, **shadow), who="test", why="test"
    )
    client.wait_for_flags(flags.version)


def raw(client: Client, task: str, queue: str, command: str, **kwargs: Any) -> AsyncResult:
    """A message sent the way a caller with only Celery could, skipping the client."""
    return client.app.send_task(task, args=(command, None, None), queue=queue, **kwargs)


def node_logs(cluster: Cluster) -> str:
    return "\n".join(node.log.read_text(errors="replace") for node in cluster.nodes)


def test_caller_set_internal_options_never_reach_redis_or_switch_anything(
    client: Client, cluster: Cluster
) -> None:
    counts_key = client.keys.shadow_counts
    client.redis.hset(counts_key, mapping={k.decode(): v.decode() for k, v in COUNTS.items()})
    # Through the client: refused locally, nothing sent.
    with pytest.raises(InvalidArguments, match="unknown option"):
        client.submit("ping", shadow_id="counts")
    with pytest.raises(InvalidArguments, match="unknown option"):
        client.execute("fail", shadow_role="shadow")
    with pytest.raises(InvalidArguments, match="unknown option"):
        client.submit("ping", colour="blue")
    # Around the client, to the router and straight to each lane: refused there.
    forged = {"shadow_id": "counts", "shadow_role": "primary"}
    sent = [raw(client, ROUTE_TASK, ROUTER_QUEUE, "ping", kwargs=forged)]
    sent += [raw(client, LANE_TASKS[lane], lane, "ping", kwargs=forged) for lane in LANE_TASKS]
    sent += [raw(client, LANE_TASKS[lane], lane, "fail", kwargs={"shadow_role": "shadow"})
             for lane in LANE_TASKS]  # fmt: skip
    for result in sent:
        with pytest.raises(InvalidArguments, match="unknown option"):
            result.get(timeout=30)
    assert client.redis.hgetall(counts_key) == COUNTS  # still there, unchanged


def test_a_session_id_with_a_final_newline_never_reaches_a_key(client: Client) -> None:
    with pytest.raises(InvalidArguments, match="invalid session id"):
        client.submit("ping", session_id="s-1\n")
    for lane in LANE_TASKS:  # sent around the client: refused, not SessionNotFound
        sent = client.app.send_task(LANE_TASKS[lane], args=("ping", None, "s-1\n"), queue=lane)
        with pytest.raises(InvalidArguments, match="invalid session id"):
            sent.get(timeout=30)
    routed = client.app.send_task(ROUTE_TASK, args=("ping", None, "s-1\n"), queue=ROUTER_QUEUE)
    with pytest.raises(InvalidArguments, match="invalid session id"):
        routed.get(timeout=30)
    assert client.redis.keys(f"{client.keys.prefix}session:s-1*") == []


def test_a_forged_shadow_header_is_ignored_and_the_typed_error_arrives(client: Client) -> None:
    client.redis.hset(client.keys.shadow_counts, mapping={"compared": 5})
    before = client.redis.hgetall(client.keys.shadow_counts)
    for lane in LANE_TASKS:
        forged = raw(client, LANE_TASKS[lane], lane, "fail",
                     headers={SHADOW_HEADER: {"role": "shadow", "pair": "counts"}})  # fmt: skip
        with pytest.raises(CommandFailed):  # not a swallowed None
            forged.get(timeout=30)
    assert client.redis.hgetall(client.keys.shadow_counts) == before


def test_timeout_is_checked_against_the_lane_request_timeout(client: Client) -> None:
    assert client.submit("sleep", {"seconds": 0.01}, timeout=5).get(timeout=30)
    with pytest.raises(InvalidArguments, match="at most 30"):  # REQUEST_TIMEOUT is 30 s
        client.submit("ping", timeout=31).get(timeout=30)
    with pytest.raises(InvalidArguments, match="timeout"):
        client.submit("ping", timeout=-1)


@pytest.mark.parametrize("lane", ["v3", "v2compat"])
def test_broken_metrics_and_shadow_recording_never_change_the_outcome(
    client: Client, cluster: Cluster, lane: str
) -> None:
    broken = [client.keys.lane_metrics(lane), client.keys.shadow_counts]
    for key in broken:
        client.redis.delete(key)
        client.redis.set(key, "not a hash")  # every write to it is a Redis error
    try:
        route_to(client, lane, shadow=True, shadow_rate=1.0)
        for i in range(4):
            result = client.submit("calculate", {"expression": f"{i} * 7"})
            assert result.get(timeout=30) == {"result": i * 7} and result.queue == lane
        with pytest.raises(CommandFailed):
            client.execute("fail")
        deadline = time.monotonic() + 15
        while "RecordShadow.after failed" not in (logs := node_logs(cluster)):
            assert time.monotonic() < deadline, "the shadow step never failed"
            time.sleep(0.1)  # the shadow copies run on the other lane, asynchronously
        assert "RecordMetrics.after failed" in logs
    finally:
        client.redis.delete(*broken)


def test_an_unexpected_exception_is_counted_as_a_server_error(client: Client) -> None:
    route_to(client, "v3")
    metrics = LaneMetrics(client.redis)
    before = metrics.summary("v3")
    client.redis.set(client.keys.session("wrong-type"), "a string, not a session hash")
    try:
        with pytest.raises(Exception, match="WRONGTYPE") as caught:
            client.execute("ping", session_id="wrong-type")
    finally:
        client.redis.delete(client.keys.session("wrong-type"))
    assert not isinstance(caught.value, InvalidArguments)
    assert client.execute("ping")["pong"] is True
    after = metrics.summary("v3")
    assert after["requests"] - before["requests"] == 2
    assert after["errors"] - before["errors"] == 1  # not counted as a success
    assert after["client_errors"] == before["client_errors"]
    assert (
        after["error_types"]["ResponseError"] - before["error_types"].get("ResponseError", 0) == 1
    )
