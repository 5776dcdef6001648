"""On real nodes: the router forwards by publishing the lane message under the caller's
task id (no ``Task.replace``), and everything a caller sees is as before.

A router, a V3 and a V2-compat node (chaos adapter, for a command that fails), each its
own process, so Celery's task events say which node did what. For a routed request:
the AsyncResult resolves to the lane's result, ``.queue`` names the lane, typed errors
arrive typed, shadow pairs are compared, V2 sessions stay on their node and interpreter
— and the router task itself *succeeds* (a ``task-succeeded`` event from the router
node, which Flower counts) without storing a result over the lane's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from celery import Celery

from snakepool.config.flags import RolloutFlags
from snakepool.errors import CommandFailed, InvalidArguments, SessionNotFound, UnknownCommand
from snakepool.tasks.client import Client
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from snakepool.tasks.worker.options import shadow_task_id
from tests.integration.cluster import Cluster, NodeProcess, three_lanes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        redis_server,
        tmp_path_factory.mktemp("forwarding"),
        adapter="snakepool.pool.interpreter.chaos",
        pool_size=2,
    )
    cluster.env["SNAKEPOOL_ENABLE_CHAOS"] = "1"
    with three_lanes(cluster, "f") as running:
        yield running


def node(cluster: Cluster, name: str) -> NodeProcess:
    return next(n for n in cluster.nodes if n.name == name)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    client = Client(redis_url=cluster.redis_url)
    client.wait_for_flags(client.flags.update(lambda _: RolloutFlags(), who="t", why="t").version)
    yield client
    client.close()


def set_flags(client: Client, change: Callable[[RolloutFlags], RolloutFlags]) -> None:
    client.wait_for_flags(client.flags.update(change, who="test", why="test").version)


class Events:
    """Celery's task events, as Flower receives them, collected in a thread."""

    def __init__(self, broker: str) -> None:
        self.app = Celery(broker=broker)
        self.seen: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._add})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _add(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.seen.append(event)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                tasks = [(e["type"], e.get("hostname")) for e in self.seen if "uuid" in e]
                raise AssertionError(f"never saw {what}; task events: {tasks[-20:]}")

    def of(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.seen if e.get("uuid") == task_id and e["type"] == kind]

    def __enter__(self) -> Events:
        self._thread.start()
        # Subscribed once a worker heartbeat (every 2 s with -E) has come through.
        self.wait(
            lambda: any(e["type"] == "worker-heartbeat" for e in self.seen), "a worker heartbeat"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)
        self.app.close()


def test_the_lane_result_and_queue_reach_the_caller_and_the_router_task_succeeds(
    client: Client, cluster: Cluster
) -> None:
    router, v3 = node(cluster, "router-f").hostname, node(cluster, "v3-f").hostname
    set_flags(client, lambda f: replace(f, percent=100))
    with Events(cluster.redis_url) as events:
        result = client.submit("calculate", {"expression": "6 * 7"})
        assert result.get(timeout=30) == {"result": 42}
        assert result.queue == "v3" and result.worker == v3
        task_id = result.id
        events.wait(lambda: len(events.of(task_id, "task-succeeded")) == 2, "two successes")
        received = {(e["hostname"], e["name"]) for e in events.of(task_id, "task-received")}
        assert received == {(router, ROUTE_TASK), (v3, LANE_TASKS["v3"])}
        succeeded = sorted(e["hostname"] for e in events.of(task_id, "task-succeeded"))
        assert succeeded == sorted([router, v3])  # the router task counts as succeeded
        assert events.of(task_id, "task-failed") == []
        # Flower learns the lane's queue from the forward's task-sent event: sent by the
        # router node with its other task events (the client's own names the router).
        sent = {(e["hostname"], e["name"], e["queue"]) for e in events.of(task_id, "task-sent")}
        assert (router, LANE_TASKS["v3"], "v3") in sent
        assert {name for _, name, _ in sent} == {ROUTE_TASK, LANE_TASKS["v3"]}
        # The router finished (its success event is in): still the lane's result, stored once.
        meta = client.app.backend.get_task_meta(task_id)
        assert (meta["status"], meta["result"]) == ("SUCCESS", {"result": 42})
        assert (meta["name"], meta["queue"], meta["worker"]) == (LANE_TASKS["v3"], "v3", v3)


@pytest.mark.parametrize("percent", [0, 100])
def test_typed_errors_through_the_router(client: Client, percent: int) -> None:
    set_flags(client, lambda f: replace(f, percent=percent))
    with pytest.raises(UnknownCommand, match="unknown command 'nope'"):
        client.execute("nope")
    with pytest.raises(InvalidArguments, match="too large"):
        client.execute("calculate", {"expression": "9**9**9"})
    with pytest.raises(CommandFailed) as caught:
        client.execute("fail")
    assert caught.value.remote_traceback
    with pytest.raises(SessionNotFound):
        client.execute("ping", session_id="no-such-session")
    failed = client.submit("fail")
    with pytest.raises(CommandFailed):
        failed.get(timeout=30)
    assert failed.queue == ("v3" if percent == 100 else "v2compat")


def test_an_error_of_the_router_itself_is_stored_for_the_caller(
    client: Client, cluster: Cluster
) -> None:
    """The router task stores no result of its own, except the error that stopped it."""
    router = node(cluster, "router-f").hostname
    with Events(cluster.redis_url) as events:
        sent = client.app.send_task(
            ROUTE_TASK, args=("ping", None, None), kwargs={"colour": "blue"}, queue=ROUTER_QUEUE
        )
        with pytest.raises(InvalidArguments, match="unknown option"):
            sent.get(timeout=30)
        events.wait(lambda: bool(events.of(sent.id, "task-failed")), "the router's failure")
        assert [e["hostname"] for e in events.of(sent.id, "task-failed")] == [router]
        assert events.of(sent.id, "task-succeeded") == []
    meta = client.app.backend.get_task_meta(sent.id)
    assert (meta["status"], meta["name"], meta["queue"]) == ("FAILURE", ROUTE_TASK, ROUTER_QUEUE)


def test_shadow_pairs_through_the_router(client: Client) -> None:
    before = client.shadows.counts()
    set_flags(client, lambda f: replace(f, percent=100, shadow=True, shadow_rate=1.0))
    sent = [client.submit("calculate", {"expression": f"{i} * 3"}) for i in range(4)]
    assert [r.get(timeout=30) for r in sent] == [{"result": i * 3} for i in range(4)]
    assert {r.queue for r in sent} == {"v3"}
    deadline = time.monotonic() + 15
    while client.shadows.counts()["compared"] < before["compared"] + 4:
        assert time.monotonic() < deadline, f"pairs not compared: {client.shadows.counts()}"
        time.sleep(0.05)  # the copies and their records run after the primaries' results
    after = client.shadows.counts()
    assert after["matched"] - before["matched"] == 4 and after["mismatched"] == before["mismatched"]
    for result in sent:  # the copies' results go nowhere
        assert client.app.backend.get_task_meta(shadow_task_id(result.id))["status"] == "PENDING"


def test_v2_sessions_stay_on_their_node_and_interpreter_through_the_router(
    client: Client, cluster: Cluster
) -> None:
    v2 = node(cluster, "v2-f").hostname
    set_flags(client, lambda f: replace(f, percent=0))
    sid = client.create_session()
    served = [client.submit("get_stats", session_id=sid) for _ in range(6)]
    pids = {r.get(timeout=30)["pid"] for r in served}
    assert len(pids) == 1  # one interpreter of the two
    assert {r.worker for r in served} == {v2} and {r.queue for r in served} == {"v2compat"}
    assert client.get_session(sid)["v2_node"] == v2
    later = client.submit("get_stats", session_id=sid)
    assert later.get(timeout=30)["pid"] in pids and later.queue == "v2compat"


def test_lane_figures_of_a_concurrent_burst_are_all_written_within_seconds(
    client: Client, cluster: Cluster
) -> None:
    """Batched while the node is busy, the tail written by its heartbeat: none lost."""
    from concurrent.futures import ThreadPoolExecutor

    from snakepool.tasks.rollout.metrics import LaneMetrics

    set_flags(client, lambda f: replace(f, percent=100))
    metrics = LaneMetrics(client.redis)
    before = metrics.summary("v3")["requests"]
    direct = Client(redis_url=cluster.redis_url, routing="direct")  # a new client's first
    try:  # requests, 8 at once: every one by the flags in Redis (100 %), none by defaults

        def ping(_: int) -> tuple[bool, str]:
            result = direct.submit("ping")
            return result.get(timeout=30)["pong"], str(result.queue)

        with ThreadPoolExecutor(max_workers=8) as executor:
            results = list(executor.map(ping, range(60)))
    finally:
        direct.close()
    assert results == [(True, "v3")] * 60
    deadline = time.monotonic() + 5  # FLUSH_AFTER_SECONDS, then the heartbeat's second
    while metrics.summary("v3")["requests"] - before < 60:
        assert time.monotonic() < deadline, metrics.summary("v3")
        time.sleep(0.05)  # written by the node's own thread: nothing to wait on here
    time.sleep(1.5)  # one more heartbeat: nothing is counted twice
    assert metrics.summary("v3")["requests"] - before == 60
