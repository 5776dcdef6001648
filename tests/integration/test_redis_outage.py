"""What a Redis restart must not break (issue 9 item 6), piece by piece, on a real
redis-server the test stops and starts (the end-to-end run is tests/chaos).

- a client's ``submit`` while Redis is down is refused at once with ``PoolUnavailable``;
- a result stored while a waiter's connection was down, or after, still reaches it —
  also after an outage longer than Celery's own 20 s reconnect budget;
- a broker channel whose connection was collected after a loss can still acknowledge
  (and close) instead of killing the worker with an ``AttributeError``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import TimeoutError as ResultTimeout
from kombu import Connection, Exchange, Queue

from snakepool.config import load_settings
from snakepool.errors import PoolUnavailable
from snakepool.tasks.client import Client
from snakepool.tasks.worker.app import create_app
from snakepool.tasks.worker.broker import transport_for
from snakepool.tasks.worker.results import ResilientResultConsumer
from tests.chaos.redis_process import RedisProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("routing", ["router", "direct"])
def test_submit_while_redis_is_down_is_refused_at_once(server: RedisProcess, routing: str) -> None:
    client = Client(redis_url=server.url, routing=routing)
    try:
        client.submit("ping")  # connected and subscribed once
        server.stop()
        for _ in range(2):  # the second one finds the consumer already disconnected
            started = time.monotonic()
            with pytest.raises(PoolUnavailable, match="request not sent") as refused:
                client.submit("ping")
            assert time.monotonic() - started < 5
            assert refused.value.data["reason"] == "unreachable"
        server.start()
        assert client.submit("ping").id  # and accepted again once Redis is back
    finally:
        client.close()


# Celery's Redis backend stores results with SETEX, which redis-py 8 marks deprecated.
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_waiter_gets_results_stored_during_and_after_an_outage(server: RedisProcess) -> None:
    settings = load_settings(redis_url=server.url)
    client, node = create_app(settings), create_app(settings, node=True)
    try:
        assert isinstance(client.backend.result_consumer, ResilientResultConsumer)
        before, during = (client.send_task("x.y", task_id=uuid.uuid4().hex) for _ in "ab")
        server.stop()
        started = time.monotonic()
        with pytest.raises(ResultTimeout):  # waits, quietly: no RuntimeError, no 20 s stall
            before.get(timeout=1)
        assert time.monotonic() - started < 5
        server.start()
        node.backend.store_result(during.id, {"n": 2}, "SUCCESS")
        after = client.send_task("x.y", task_id=uuid.uuid4().hex)
        node.backend.store_result(before.id, {"n": 1}, "SUCCESS")
        node.backend.store_result(after.id, {"n": 3}, "SUCCESS")
        assert [r.get(timeout=10) for r in (before, during, after)] == [
            {"n": 1}, {"n": 2}, {"n": 3},
        ]  # fmt: skip
    finally:
        client.close()
        node.close()


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_result_stored_between_the_reread_and_the_resubscribe_still_arrives(
    server: RedisProcess,
) -> None:
    """Celery's reconnect reads the awaited results, then subscribes: a result stored in
    that gap (here, exactly there) was missed and its ``get`` timed out."""
    settings = load_settings(redis_url=server.url)
    client, node = create_app(settings), create_app(settings, node=True)
    try:
        waited = client.send_task("x.y", task_id=uuid.uuid4().hex)
        outcome: list[object] = []

        def wait() -> None:
            try:
                outcome.append(waited.get(timeout=8))
            except Exception as exc:  # the assertion below names it
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()  # reads nothing stored, then waits for the published result
        consumer = client.backend.result_consumer
        deadline = time.monotonic() + 5
        while consumer._get_key_for_task(waited.id) not in consumer.subscribed_to:
            assert time.monotonic() < deadline, "the waiter never subscribed"
            time.sleep(0.01)
        make_pubsub = consumer.backend.client.pubsub

        def store_then_subscribe(**kwargs: object) -> object:
            node.backend.store_result(waited.id, {"n": 7}, "SUCCESS")  # after the read
            return make_pubsub(**kwargs)

        consumer.backend.client.pubsub = store_then_subscribe
        try:
            consumer._reconnect_pubsub()  # what a lost connection makes the waiter do
        finally:
            consumer.backend.client.pubsub = make_pubsub
        waiter.join(timeout=15)
        assert outcome == [{"n": 7}]
    finally:
        client.close()
        node.close()


@pytest.mark.parametrize("fixed", [True, False])
def test_a_collected_broker_channel_still_acks_and_closes(
    server: RedisProcess, fixed: bool
) -> None:
    transport = transport_for(server.url) if fixed else None
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("x", type="direct"), routing_key="k")
    with Connection(server.url, transport=transport) as connection:
        channel = connection.channel()
        producer = connection.Producer(channel)
        for n in (1, 2):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="k", declare=[queue])
        first, second = (queue(channel).get(no_ack=False) for _ in "ab")
        assert first is not None and second is not None
        assert channel.client.hlen(channel.unacked_key) == 2
        # What Celery's consumer leaves behind when it loses the broker: Connection.collect()
        # drops the transport's client and the channel's pools, then the channel is closed.
        channel.connection.client = None
        channel._disconnect_pools()
        if not fixed:  # kombu's own channel: the AttributeError that stopped a node
            with pytest.raises(AttributeError, match="hostname"):
                first.ack()
            return
        first.ack()  # the request that ran across the outage is acknowledged ...
        channel.close()  # ... and the one that never started goes back to its queue
    with Connection(server.url) as check:
        client = check.default_channel.client
        assert client.hlen(check.default_channel.unacked_key) == 0
        assert client.llen(queue.name) == 1
        back = queue(check.default_channel).get(no_ack=True)
        assert back is not None and back.payload == {"n": 2}


def test_a_closed_broker_channel_still_publishes_and_acks(server: RedisProcess) -> None:
    """The router's forward met a channel kombu had closed under it during a restart:
    ``AttributeError: 'NoneType' object has no attribute 'client'`` became its result."""
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("x", type="direct"), routing_key="k")
    with Connection(server.url, transport=transport_for(server.url)) as connection:
        channel = connection.channel()
        producer = connection.Producer(channel)
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="k", declare=[queue])
        taken = queue(channel).get(no_ack=False)
        assert taken is not None
        other = connection.channel()
        other.close()
        assert other.connection is None
        connection.Producer(other).publish({"n": 2}, exchange="", routing_key=queue.name)
        channel.connection = None  # as a closed channel is left
        taken.ack()
    with Connection(server.url) as check:
        client = check.default_channel.client
        assert client.hlen(check.default_channel.unacked_key) == 0
        assert client.llen(queue.name) == 1


def test_messages_taken_but_not_started_are_requeued_once_redis_is_back(
    server: RedisProcess,
) -> None:
    """kombu restores a lost channel's unacked messages once, at once: with Redis away
    that failed, and they waited for VISIBILITY_TIMEOUT (an hour)."""
    transport = transport_for(server.url)
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("x", type="direct"), routing_key="k")
    with Connection(server.url, transport=transport) as connection:
        channel = connection.channel()
        producer = connection.Producer(channel)
        for n in (1, 2):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="k", declare=[queue])
        taken = [queue(channel).get(no_ack=False) for _ in "ab"]
        assert all(taken)
        server.stop()
        channel.close()  # what a lost connection leads to: the restore fails, quietly
        server.start()
        with Connection(server.url) as check:
            client = check.default_channel.client
            deadline = time.monotonic() + 15
            while client.llen(queue.name) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # requeued by a background retry: nothing to wait on
            assert client.llen(queue.name) == 2
            assert client.hlen(check.default_channel.unacked_key) == 0


def test_other_broker_urls_keep_kombus_transports() -> None:
    assert transport_for("redis://localhost:6379/0") == "snakepool.tasks.worker.broker:Transport"
    assert transport_for("REDIS://localhost/0") is not None
    for url in ("rediss://h:6380/0", "sentinel://h:26379", "redis+socket:///tmp/r.sock"):
        assert transport_for(url) is None
