"""kombu's binding tables are bounded by live nodes (review finding 8).

Every node binds its worker-direct queue ``<node>.dq2`` (``_kombu.binding.C.dq2`` and
``_kombu.binding_permanent.C.dq2``) and its control queue ``<node>.celery.pidbox``
(``_kombu.binding.celery.pidbox``). Before, the direct-queue entries stayed for ever, one
per node name ever started; a SIGKILLed node's control entry too. Now a clean stop
removes its own, and a survivor removes a dead node's once it has been gone for
``BINDING_GRACE_SECONDS``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.utils.nodenames import worker_direct

from snakepool.config import load_settings
from snakepool.tasks.worker.app import LANE_TASKS, create_app
from snakepool.tasks.worker.recovery.bindings import GoneNodeBindings, release_own_bindings
from snakepool.tasks.worker.recovery.broker import BrokerRedis
from tests.integration.cluster import Cluster, NodeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEP = "\x06\x16"
DIRECT = "_kombu.binding.C.dq2"
DIRECT_PERMANENT = "_kombu.binding_permanent.C.dq2"
CONTROL = "_kombu.binding.celery.pidbox"


def direct_member(node: str) -> bytes:
    return f"{node}{SEP}{SEP}{node}.dq2".encode()


def control_member(node: str) -> bytes:
    return f"{SEP}{SEP}{node}.celery.pidbox".encode()


def members(client: redis.Redis, key: str) -> set[bytes]:
    return set(client.smembers(key))  # type: ignore[arg-type]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(redis_url, tmp_path, adapter="snakepool.pool.interpreter.builtin", pool_size=1)
    try:
        yield made
    finally:
        assert made.stop() == [], "processes left behind"


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    made = create_app(load_settings(redis_url=redis_url))
    yield made
    made.close()


def stop_cleanly(cluster: Cluster, node: NodeProcess) -> None:
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(60) == 0, node.log_tail()
    cluster.nodes.remove(node)


@pytest.mark.timeout(180)
def test_a_clean_stop_takes_its_bindings_a_death_loses_them_to_a_survivor(
    cluster: Cluster, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    nodes = [cluster.start("v2compat", name, wait=False) for name in ("bind-a", "bind-b", "bind-c")]
    for node in nodes:
        cluster.wait_ready(node)
    a, b, c = (node.hostname for node in nodes)
    assert members(client, DIRECT) == members(client, DIRECT_PERMANENT) == {
        direct_member(a), direct_member(b), direct_member(c),
    }  # fmt: skip
    assert members(client, CONTROL) == {control_member(a), control_member(b), control_member(c)}

    stop_cleanly(cluster, nodes[0])  # its own, at once
    assert members(client, DIRECT) == members(client, DIRECT_PERMANENT) == {
        direct_member(b), direct_member(c),
    }  # fmt: skip
    assert members(client, CONTROL) == {control_member(b), control_member(c)}

    cluster.kill(nodes[1])  # by a survivor, once gone for the grace period
    killed = time.monotonic()
    wait_until(
        lambda: members(client, DIRECT) == {direct_member(c)}
        and members(client, DIRECT_PERMANENT) == {direct_member(c)}
        and members(client, CONTROL) == {control_member(c)},
        60, "the dead node's bindings removed",
    )  # fmt: skip
    assert time.monotonic() - killed > 10  # not before the grace period
    client.close()


def test_a_clean_stop_moves_what_is_queued_for_it_to_the_lane(app: Celery) -> None:
    node = "gone-soon@test"
    app.send_task(LANE_TASKS["v2compat"], args=("ping", None, None), queue=worker_direct(node))
    broker = BrokerRedis(app)
    try:
        assert broker.client.llen(f"{node}.dq2") == 1
        assert direct_member(node) in members(broker.client, DIRECT)
        assert release_own_bindings(app, node) == 1
        assert direct_member(node) not in members(broker.client, DIRECT)
        assert direct_member(node) not in members(broker.client, DIRECT_PERMANENT)
        assert broker.client.llen(f"{node}.dq2") == 0
        assert broker.client.llen("v2compat") == 1  # the lane's shared queue now
    finally:
        broker.close()


def test_a_node_back_under_its_name_keeps_its_bindings(app: Celery) -> None:
    node = "back-again@test"
    app.send_task(LANE_TASKS["v2compat"], args=("ping", None, None), queue=worker_direct(node))
    broker = BrokerRedis(app)
    mailbox = app.control.mailbox
    # Declared as a node does, on a channel kept open (closing it would unbind it).
    connection = app.connection_for_write()
    mailbox.get_queue(node).bind(connection.default_channel).declare()
    assert control_member(node) in members(broker.client, CONTROL)
    answers = iter([[node], []])  # gone when looked at, back by the time it is unbound
    janitor = GoneNodeBindings(
        broker, mailbox_queue=mailbox.get_queue, mailbox_exchange=mailbox.exchange.name,
        gone=lambda nodes: [n for n in nodes if n == node and next(answers, [node])],
        grace=0.0,
    )  # fmt: skip
    try:
        assert janitor.sweep() == []
        assert direct_member(node) in members(broker.client, DIRECT)
        assert direct_member(node) in members(broker.client, DIRECT_PERMANENT)
        assert control_member(node) in members(broker.client, CONTROL)
        assert broker.client.llen("v2compat") == 1  # its backlog went to the lane all the same
        assert janitor.sweep() == [node]  # gone for good now
        assert direct_member(node) not in members(broker.client, DIRECT)
        assert control_member(node) not in members(broker.client, CONTROL)
    finally:
        connection.release()
        broker.close()
