"""A node outlives Redis refusing its commands, on a real node and redis-server.

Redis at ``maxmemory`` (``noeviction``) refuses ``BLMOVE``, scripts and anything queued in
a ``MULTI``; a queue key overwritten with a string answers ``WRONGTYPE``. Each used to
raise out of the worker's event loop ("Unrecoverable error": the node exited). Now the
node stays up, a request running across the refusal gets its result once memory frees,
and the node serves again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from snakepool.tasks.client import Client
from tests.integration.cluster import Cluster, NodeProcess, one_node_client, set_percent
from tests.integration.node_chaos import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REFUSED = "Redis refused to move messages"
TRANSPORT = "snakepool.tasks.worker.broker:Transport"


@pytest.fixture
def node_client(redis_url: str, tmp_path: Path) -> Iterator[tuple[Client, NodeProcess]]:
    cluster = Cluster(redis_url, tmp_path, adapter="tests.adapters.clock", pool_size=1)
    try:
        with one_node_client(cluster, "refusals") as client:
            yield client, cluster.nodes[0]
    finally:
        redis.Redis.from_url(redis_url).config_set("maxmemory", 0)  # whatever happened


@pytest.fixture
def direct(node_client: tuple[Client, NodeProcess], redis_url: str) -> Iterator[Client]:
    """A zero-hop client, every request on the V3 lane."""
    set_percent(node_client[0], 100)
    direct = Client(redis_url=redis_url, routing="direct")
    yield direct
    direct.close()


def _refusals(node: NodeProcess) -> int:
    return node.log_tail(400).count(REFUSED)


def test_a_node_outlives_redis_at_maxmemory_and_stores_what_ran_across_it(
    node_client: tuple[Client, NodeProcess], redis_client: redis.Redis, direct: Client
) -> None:
    node = node_client[1]
    assert direct.submit("ping").get(timeout=30)["pong"] is True
    running = direct.submit("span", {"seconds": 1.0})
    wait_for(lambda: redis_client.llen("v3") == 0, 10, "the node to take the request")
    redis_client.config_set("maxmemory", 1)  # below what is used: every write refused
    try:
        # Its BLMOVEs refused, then the request's result (Celery retries it) and ack.
        wait_for(lambda: _refusals(node) >= 1, 10, "the node to meet a refusal")
        wait_for(lambda: "Failed operation _store_result" in node.log_tail(400), 10,
                 "the result's store to be refused")  # fmt: skip
        assert node.process.poll() is None, node.log_tail()
    finally:
        redis_client.config_set("maxmemory", 0)
    span = running.get(timeout=30)  # stored once memory freed
    assert span["ended"] - span["started"] >= 900_000  # µs: it ran its second
    assert direct.submit("ping").get(timeout=30)["pong"] is True
    assert node.process.poll() is None
    assert "Unrecoverable error" not in node.log_tail(400)


def test_a_queue_key_that_is_not_a_list_leaves_the_node_serving(
    node_client: tuple[Client, NodeProcess], redis_client: redis.Redis
) -> None:
    """``SET router x`` by anyone with access to Redis took every router node out."""
    client, node = node_client
    assert client.submit("ping").get(timeout=30)["pong"] is True
    for queue in ("router", "v3", "v2compat"):
        redis_client.set(queue, "not a list")
    try:
        wait_for(lambda: _refusals(node) >= 2, 10, "the node to meet the bad keys")
        assert node.process.poll() is None, node.log_tail()
    finally:
        redis_client.delete("router", "v3", "v2compat")
    assert client.submit("ping").get(timeout=30)["pong"] is True
    assert node.process.poll() is None
    assert _refusals(node) <= 6  # one warning per list, not one per attempt


def test_an_ack_refused_in_its_multi_is_sent_as_the_removals_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("q1", Exchange("q1", type="direct"), routing_key="q1")
    with Connection(redis_url) as publisher:
        Producer(publisher).publish({"n": 1}, exchange="q1", routing_key="q1", declare=[queue])
    options = {"priority_steps": [0, 9], "processing_list": "processing:refusals-test"}
    received: list[Any] = []
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as connection:
        consumer = Consumer(connection.channel(), [queue],
                            callbacks=[lambda body, message: received.append(message)])  # fmt: skip
        consumer.qos(prefetch_count=1)
        consumer.consume()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.1)
        [message] = received
        channel = consumer.channel
        assert redis_client.hlen(channel.unacked_key) == 1
        redis_client.config_set("maxmemory", 1)
        try:
            message.ack()  # raised OutOfMemoryError before
        finally:
            redis_client.config_set("maxmemory", 0)
        assert redis_client.hlen(channel.unacked_key) == 0
        assert redis_client.zcard(channel.unacked_index_key) == 0
        assert channel.qos.can_consume()  # settled here too: room for the next message
        consumer.cancel()


def _inflight_key(redis_client: redis.Redis) -> bytes:
    [key] = list(redis_client.scan_iter("snakepool:inflight:*", _type="HASH"))
    return bytes(key)


def test_an_ack_whose_keys_are_not_of_their_type_leaves_the_node_serving(
    node_client: tuple[Client, NodeProcess], redis_client: redis.Redis, direct: Client
) -> None:
    node = node_client[1]
    running = direct.submit("span", {"seconds": 1.0})
    wait_for(lambda: redis_client.hlen("unacked") == 1, 10, "the node to accept it")
    redis_client.delete("unacked")
    redis_client.set("unacked", "not a hash")  # its ack's HDEL: WRONGTYPE
    try:
        assert running.get(timeout=30)["ended"] > 0
        wait_for(lambda: "Redis refused its MULTI" in node.log_tail(400), 10, "the ack")
        assert node.process.poll() is None, node.log_tail()
    finally:
        redis_client.delete("unacked")
    assert direct.submit("ping").get(timeout=30)["pong"] is True
    # The other removals went through (the ping's own ack comes after its result).
    wait_for(lambda: redis_client.zcard("unacked_index") == 0, 10, "no stale index entry")


def test_a_message_whose_accept_ran_in_part_is_put_back_once_redis_takes_it(
    node_client: tuple[Client, NodeProcess], redis_client: redis.Redis
) -> None:
    """ACCEPT moves the message into ``unacked``, then fails on an in-flight record that
    is not a hash: the message was in ``unacked``, delivered nowhere, for an hour."""
    client, node = node_client
    assert client.submit("ping").get(timeout=30)["pong"] is True
    record = _inflight_key(redis_client)
    redis_client.delete(record)
    redis_client.set(record, "not a hash")
    try:
        waiting = client.submit("ping")
        wait_for(lambda: _refusals(node) >= 1, 10, "the ACCEPT to be refused")
        assert node.process.poll() is None, node.log_tail()
    finally:
        redis_client.delete(record)
    assert waiting.get(timeout=30)["pong"] is True  # restored by the reclaim, run
    wait_for(lambda: redis_client.hlen("unacked") == 0, 10, "its ack (after its result)")
