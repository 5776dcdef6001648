"""Warm shutdown at the node and lane level, and lane liveness (issue 9 items 2 and 5).

No processes: fakeredis and a stand-in pool. What must hold:

- a node that is stopping refuses requests that have not started with ``NodeStopping``,
  which the lane task turns into ``Reject(requeue=True)`` — never a failure, never
  counted against the lane, never retried on the stopping node;
- ``Node.shutdown`` waits for the requests in flight (up to its grace), then stops;
- a lane with no live node sheds its traffic like an open breaker, never onto a lane
  nobody serves; the change is audited once however many routers see it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis
from celery.exceptions import Reject

from snakepool.config import load_settings
from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.errors import PoolUnavailable, RequestTimeout, WorkerCrashed
from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.liveness import LaneLiveness, announce_lanes
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.worker.lanes import run_lane
from snakepool.tasks.worker.node import HEARTBEAT_TTL, Node, NodeStopping
from snakepool.tasks.worker.pipeline import retries as retries_module

KEYS = Keys()


class StandInPool:
    """What the lanes use of a Pool; ``behaviour`` decides each call."""

    def __init__(self, behaviour: Callable[[str], Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[str] = []
        self.stopped_with: float | None = None
        self.drained = False

    def execute(self, command: str, args: dict[str, Any], **call: Any) -> Any:
        self.calls.append(command)
        return self.behaviour(command)

    def commands(self) -> dict[str, dict[str, bool]]:
        return {"ping": {"read_only": True, "idempotent": True}}

    def begin_drain(self) -> None:
        self.drained = True

    def stop(self, grace: float = 5.0) -> None:
        self.stopped_with = grace

    def stats(self) -> dict[str, Any]:
        return {}


def make_node(behaviour: Callable[[str], Any], **settings: Any) -> Node:
    url = f"fakeredis://{uuid.uuid4().hex}"
    node = Node(load_settings(redis_url=url, **settings), name="unit@test", lanes=("v3",))
    node.pool = StandInPool(behaviour)  # type: ignore[assignment]
    return node


def lane_request() -> SimpleNamespace:
    return SimpleNamespace(id=uuid.uuid4().hex, headers=None)


def requests_counted(node: Node) -> int:
    return int(node.metrics.summary("v3")["requests"])


# ------------------------------------------------------------------ warm shutdown


def test_a_stopping_node_requeues_what_has_not_started() -> None:
    node = make_node(lambda _: {"pong": True})
    assert run_lane(node, "v3", lane_request(), "ping", None, None, {}) == {"pong": True}
    node.stopping = True
    with pytest.raises(Reject) as rejected:
        run_lane(node, "v3", lane_request(), "ping", None, None, {})
    assert rejected.value.requeue is True
    assert node.pool.calls == ["ping"]  # type: ignore[union-attr]
    assert requests_counted(node) == 1  # the requeued one is not an outcome here


@pytest.mark.parametrize(
    ("error", "pool_stopped", "requeued"),
    [
        (PoolUnavailable("the pool is stopping"), False, True),  # it never started
        (WorkerCrashed("killed by the pool's stop"), True, True),  # stopped under it
        (WorkerCrashed("a real crash during the drain"), False, False),
        (RequestTimeout("its own timeout"), True, False),  # it ran to its end
    ],
)
def test_errors_that_only_say_the_node_is_stopping_are_requeued(
    error: Exception, pool_stopped: bool, requeued: bool
) -> None:
    node = make_node(lambda _: {"pong": True})

    def fail(_: str) -> Any:
        node.stopping = True
        node._pool_stopped = pool_stopped
        raise error

    node.pool.behaviour = fail  # type: ignore[union-attr]
    node.pool.commands = dict  # type: ignore[union-attr,method-assign]  # not idempotent
    if requeued:
        with pytest.raises(Reject) as rejected:
            run_lane(node, "v3", lane_request(), "unsafe", None, None, {})
        assert rejected.value.requeue is True
        assert requests_counted(node) == 0
    else:
        with pytest.raises(type(error)):
            run_lane(node, "v3", lane_request(), "unsafe", None, None, {})
        assert requests_counted(node) == 1


def test_a_retry_never_starts_on_a_stopping_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries_module, "RETRY_BASE_SECONDS", 0.0)
    node = make_node(lambda _: {"pong": True})

    def crash_then_stop(_: str) -> Any:
        node.stopping = True  # the shutdown begins while the first run crashes
        raise WorkerCrashed("crashed")

    node.pool.behaviour = crash_then_stop  # type: ignore[union-attr]
    with pytest.raises(Reject) as rejected:
        run_lane(node, "v3", lane_request(), "ping", None, None, {})  # idempotent: retried
    assert rejected.value.requeue is True
    assert node.pool.calls == ["ping"]  # type: ignore[union-attr]  # the retry went back


@pytest.mark.timeout(10)
def test_shutdown_waits_for_requests_in_flight_then_stops_the_pool() -> None:
    node = make_node(lambda _: {"pong": True})
    entered, release = threading.Event(), threading.Event()

    def in_flight() -> None:
        with node.serving():
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=in_flight)
    worker.start()
    assert entered.wait(5)
    outcome: list[bool] = []
    stopper = threading.Thread(target=lambda: outcome.append(node.shutdown(grace=5)))
    stopper.start()
    deadline = time.monotonic() + 5
    while not node.stopping and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.stopping and node.in_flight() == 1
    with pytest.raises(NodeStopping), node.serving():
        pass  # a new request is refused while the old one runs
    stopper.join(0.2)
    assert stopper.is_alive(), "shutdown must wait for the request in flight"
    assert node.pool.stopped_with is None  # type: ignore[union-attr]
    release.set()
    stopper.join(5)
    worker.join(5)
    assert outcome == [True]
    assert node.pool.stopped_with is not None  # type: ignore[union-attr]


@pytest.mark.timeout(10)
def test_shutdown_gives_up_after_its_grace() -> None:
    node = make_node(lambda _: {"pong": True})
    release = threading.Event()
    entered = threading.Event()

    def stuck() -> None:
        with node.serving():
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=stuck)
    worker.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert node.shutdown(grace=0.3) is False
    assert 0.25 <= time.monotonic() - started < 3
    release.set()
    worker.join(5)


def test_shutdown_grace_defaults_to_the_setting() -> None:
    node = make_node(lambda _: {}, request_timeout=0.5, shutdown_grace=0.6)
    node._in_flight = 1  # a request that never ends: shutdown waits exactly the grace
    started = time.monotonic()
    assert node.shutdown() is False
    assert 0.55 <= time.monotonic() - started < 3


def test_a_stopping_node_stops_announcing_its_lanes() -> None:
    node = make_node(lambda _: {})
    node.heartbeat()
    assert node.redis.exists(KEYS.lane_alive("v3"))
    assert not node.redis.exists(KEYS.lane_alive("v2compat"))
    node.redis.delete(KEYS.lane_alive("v3"))
    node.stopping = True
    node.heartbeat()
    assert node.redis.exists(KEYS.node("unit@test"))  # still alive: its requests finish
    assert not node.redis.exists(KEYS.lane_alive("v3"))
    assert node.describe()["stopping"] is True


# ------------------------------------------------------------------ lane liveness


def announce(client: redis.Redis, node: str, *lanes: str) -> None:
    with client.pipeline(transaction=False) as pipe:
        announce_lanes(pipe, KEYS, node, lanes, HEARTBEAT_TTL)
        pipe.execute()


def breaker_with(client: redis.Redis, audit: FlagStore | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        LaneMetrics(client),
        BreakerPolicy(),
        liveness=LaneLiveness(client, audit=audit, check_every=0),
    )


def test_a_lane_with_no_live_node_sheds_to_the_other() -> None:
    client = fakeredis.FakeRedis()
    breaker = breaker_with(client)
    # Nobody announces anything (a Redis with no node yet): nothing is diverted.
    assert [breaker.route(lane) for lane in ("v3", "v2compat")] == ["v3", "v2compat"]
    announce(client, "v2-a@h", "v2compat", "router")
    assert breaker.route("v3") == "v2compat"
    assert breaker.route("v2compat") == "v2compat"
    assert breaker.shedding() == {"v3": "no live node"}
    announce(client, "v3-a@h", "v3")
    assert breaker.route("v3") == "v3"
    assert breaker.shedding() == {}


def test_traffic_is_never_shed_onto_a_lane_nobody_serves() -> None:
    client = fakeredis.FakeRedis()
    metrics = LaneMetrics(client)
    for _ in range(30):
        metrics.record("v3", 0.01, WorkerCrashed("x"))  # v3's breaker opens
    announce(client, "v3-a@h", "v3")
    breaker = breaker_with(client)
    assert breaker.is_open("v3")
    assert breaker.route("v3") == "v3"  # v2compat has no node: v3 keeps its traffic
    announce(client, "v2-a@h", "v2compat")
    assert breaker.route("v3") == "v2compat"
    assert breaker.shedding() == {"v3": "breaker open"}


def test_liveness_is_read_at_most_once_per_interval() -> None:
    client = fakeredis.FakeRedis()
    reads: list[int] = []
    original = client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return original(*args, **kwargs)

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    liveness = LaneLiveness(client, check_every=60)
    for _ in range(1000):
        liveness.serves("v3")
    assert len(reads) == 1


def test_a_redis_error_keeps_the_last_known_state() -> None:
    client = fakeredis.FakeRedis()
    announce(client, "v2-a@h", "v2compat")
    liveness = LaneLiveness(client, check_every=0)
    assert liveness.snapshot() == {"v3": False, "v2compat": True}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("down")

    client.pipeline = broken  # type: ignore[method-assign]
    assert liveness.snapshot() == {"v3": False, "v2compat": True}


def test_a_lane_lost_and_back_is_audited_once_whoever_sees_it() -> None:
    client = fakeredis.FakeRedis()
    flags = FlagStore(client)
    announce(client, "v3-a@h", "v3")
    announce(client, "v2-a@h", "v2compat")
    routers = [LaneLiveness(client, audit=flags, who=f"r{i}", check_every=0) for i in range(3)]
    for router in routers:
        assert router.snapshot() == {"v3": True, "v2compat": True}
    assert flags.history() == []  # lanes seen up at start: nothing to say
    client.delete(KEYS.lane_alive("v3"))  # every V3 node's heartbeat expired
    for router in routers:
        assert router.serves("v3") is False
        router.serves("v3")
    history = flags.history()
    assert len(history) == 1
    assert history[0]["details"] == {"event": "lane_down", "lane": "v3", "traffic_to": "v2compat"}
    assert "no live node" in history[0]["why"] and history[0]["who"] == "r0"
    assert history[0]["old"] == history[0]["new"]  # no flag changed
    announce(client, "v3-b@h", "v3")
    for router in reversed(routers):
        assert router.serves("v3") is True
    history = flags.history()
    assert [h["details"]["event"] for h in history] == ["lane_up", "lane_down"]
    assert history[0]["who"] == "r2"
