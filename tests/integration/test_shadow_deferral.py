"""Shadow copies yield to live traffic (``tasks/worker/pop_defer.py``) on a real
redis-server: kombu consumers on our transport, and a real node.

A copy is published with priority 9, onto its lane queue's own list; a node takes it
only once no live message is in flight (and has not been for ``QUIET_SECONDS``), or when
live traffic has kept it waiting ``STARVE_SECONDS``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from snakepool.config.keys import Keys
from snakepool.tasks.client import Client
from snakepool.tasks.rollout import shadow as shadow_records
from snakepool.tasks.worker import pop_defer
from snakepool.tasks.worker.options import shadow_task_id
from snakepool.tasks.worker.pop_defer import QUIET_SECONDS, SHADOW_PRIORITY, deferred_list
from snakepool.tasks.worker.status import collect_status
from tests.integration.cluster import Cluster, one_node_client, set_percent, stopped_after
from tests.integration.node_chaos import wait_for

pytestmark = [pytest.mark.integration]

TRANSPORT = "snakepool.tasks.worker.broker:Transport"
PROCESSING = Keys().processing("cd" * 16)
QUEUE = Queue("q1", Exchange("q1", type="direct"), routing_key="q1")
COPIES = deferred_list("q1")  # kombu's list of priority 9 of q1


def _connection(redis_url: str) -> Connection:
    options = {"priority_steps": [0, SHADOW_PRIORITY], "processing_list": PROCESSING}
    return Connection(redis_url, transport=TRANSPORT, transport_options=options)


def _publish(redis_url: str, body: dict[str, Any], *, copy: bool = False) -> None:
    with Connection(redis_url) as connection:  # kombu's own transport, as a client
        Producer(connection).publish(
            body, exchange="q1", routing_key="q1", declare=[QUEUE],
            priority=SHADOW_PRIORITY if copy else 0,
        )  # fmt: skip


class Received:
    """A consumer that holds live messages until told and acks copies at once (unless
    ``hold_copies``)."""

    def __init__(self, connection: Connection, *, hold_copies: bool = False) -> None:
        self.live: list[Any] = []
        self.copies: list[tuple[float, Any]] = []
        self.hold_copies = hold_copies
        self.held: list[Any] = []
        self.consumer = Consumer(connection.channel(), [QUEUE], callbacks=[self.on_message])
        self.consumer.qos(prefetch_count=10)
        self.consumer.consume()

    def on_message(self, body: Any, message: Any) -> None:
        if "copy" in body:
            self.copies.append((time.monotonic(), body))
            if not self.hold_copies:
                message.ack()
                return
        else:
            self.live.append(body)
        self.held.append(message)


def _drain(connection: Connection, seconds: float, until: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until()):
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.05)


@pytest.mark.timeout(30)
def test_a_copy_waits_while_a_live_message_runs_and_comes_once_it_is_done(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pop_defer, "STARVE_SECONDS", 30.0)
    _publish(redis_url, {"n": 1})
    with _connection(redis_url) as connection:
        got = Received(connection)
        _drain(connection, 5, lambda: got.live)
        _publish(redis_url, {"copy": 1}, copy=True)
        _drain(connection, 0.6)
        assert got.copies == []  # the live message still runs
        assert redis_client.llen(COPIES) == 1
        assert redis_client.llen(PROCESSING) == 0  # not taken and held: still queued
        done = time.monotonic()
        got.held.pop().ack()
        _drain(connection, 5, lambda: got.copies)
        assert [body for _, body in got.copies] == [{"copy": 1}]
        assert got.copies[0][0] - done >= QUIET_SECONDS
        assert redis_client.llen(COPIES) == 0


@pytest.mark.timeout(30)
def test_copies_waiting_are_taken_newest_first(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under overload the trim drops the oldest copies; the newest, whose primaries'
    records are the least likely to have expired, are the ones compared."""
    monkeypatch.setattr(pop_defer, "STARVE_SECONDS", 30.0)
    _publish(redis_url, {"n": 1})
    with _connection(redis_url) as connection:
        got = Received(connection)
        _drain(connection, 5, lambda: got.live)
        # The copies' BLMOVE sent while idle times out (brpop_timeout, 1 s) and is not
        # sent again while the live message runs; one pending would take the first copy
        # and give it back onto the newest end.
        _drain(connection, 1.2)
        for n in range(3):
            _publish(redis_url, {"copy": n}, copy=True)
        _drain(connection, 0.3)
        assert got.copies == []
        got.held.pop().ack()
        _drain(connection, 5, lambda: len(got.copies) == 3)
        assert [body["copy"] for _, body in got.copies] == [2, 1, 0]
        assert redis_client.llen(COPIES) == 0


@pytest.mark.timeout(30)
def test_an_idle_consumer_takes_copies_at_once_and_several_at_a_time(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A node that gets only copies (V2-compat while V3 has 100 %) runs them at full
    concurrency: nothing live to yield to."""
    with _connection(redis_url) as connection:
        got = Received(connection, hold_copies=True)
        _drain(connection, 0.3)
        for n in range(3):
            _publish(redis_url, {"copy": n}, copy=True)
        _drain(connection, 5, lambda: len(got.copies) == 3)
        assert sorted(body["copy"] for _, body in got.copies) == [0, 1, 2]
        assert len(got.held) == 3  # all three in flight together
        assert redis_client.hlen("unacked") == 3


@pytest.mark.timeout(30)
def test_a_busy_consumer_takes_one_copy_per_starve_period(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    starve = 0.3
    monkeypatch.setattr(pop_defer, "STARVE_SECONDS", starve)
    for n in range(20):
        _publish(redis_url, {"copy": n}, copy=True)
    _publish(redis_url, {"n": 1})
    with _connection(redis_url) as connection:
        got = Received(connection)
        # The live message first (priority 0 before 9), then copies only by starvation.
        _drain(connection, 5, lambda: got.live)
        started = time.monotonic()
        _drain(connection, 3 * starve + 0.2)
        taken = [body["copy"] for _, body in got.copies]
        # Taken newest first, one per period.
        assert 1 <= len(taken) <= 4 and taken == list(range(19, 19 - len(taken), -1))
        assert got.copies[0][0] - started >= starve - 0.05
        gaps = [b[0] - a[0] for a, b in zip(got.copies, got.copies[1:], strict=False)]
        assert all(gap >= starve - 0.05 for gap in gaps), gaps
        assert redis_client.llen(COPIES) == 20 - len(taken)
        got.held.pop().ack()


@pytest.mark.timeout(120)
def test_on_a_node_each_copy_runs_after_its_primary_and_all_are_compared(
    redis_url: str, tmp_path: Path
) -> None:
    """``--lane all``: primaries on V3, their copies on V2-compat, in the same node. Each
    copy starts only after its primary has ended, and once the requests stop every pair
    is compared promptly (the node wakes itself when it goes quiet)."""
    cluster = Cluster(redis_url, tmp_path, adapter="tests.adapters.clock", pool_size=2)
    with one_node_client(cluster, "defer") as client:
        set_percent(client, 100)
        client.wait_for_flags(client.set_shadow(True, 1.0)["version"])
        before = client.shadows.counts()["compared"]
        for _ in range(4):
            client.execute("span", {"seconds": 0.1})
        last = time.monotonic()
        wait_for(lambda: client.shadows.counts()["compared"] == before + 4, 20, "4 comparisons")
        # 4 x 0.1 s, one at a time: not one per STARVE_SECONDS or per BLMOVE timeout (1 s)
        assert time.monotonic() - last < 2.5
        pairs = [m for m in client.shadows.mismatches(50) if m["command"] == "span"][:4]
        assert len(pairs) == 4, client.shadows.counts()  # the times differ: all mismatch
        for pair in pairs:
            primary, copy = pair["primary"], pair["shadow"]
            assert (primary["lane"], copy["lane"]) == ("v3", "v2compat")
            assert copy["value"]["started"] >= primary["value"]["ended"], pair
        client.set_shadow(False)


@contextlib.contextmanager
def _shadowing_client(redis_url: str) -> Iterator[Client]:
    """A zero-hop client that routes ``ping`` to V3 and shadows it, with no node running."""
    client = Client(redis_url=redis_url, routing="direct")
    try:
        # What a node publishes of its commands (shadowing copies only read-only ones).
        client.redis.hset(Keys().commands, "ping", json.dumps({"read_only": True}))
        client.set_shadow(True, 1.0)
        client.set_rollout(100, "test: copies go to V2-compat")  # seen after the shadow flag
        wait_for(lambda: client.decide("ping") == "v3", 5, "the client to see 100 % V3")
        yield client
    finally:
        client.close()


def _client_lists(client: Client) -> dict[str, int]:
    keys = ("v3", "v2compat", deferred_list("v2compat"))
    return {key: int(client.redis.llen(key)) for key in keys}


@pytest.mark.timeout(30)
def test_a_consumer_taking_in_batches_still_takes_a_copy_when_starving(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two live lists busy and a prefetch of one: the channel takes in batches, live lists
    first, which never reached the copies; a starving channel takes one by itself."""
    starve = 0.3
    monkeypatch.setattr(pop_defer, "STARVE_SECONDS", starve)
    queues = [QUEUE, Queue("q2", Exchange("q2", type="direct"), routing_key="q2")]
    with Connection(redis_url) as publisher:
        producer = Producer(publisher)
        for n in range(150):
            for queue in queues:
                producer.publish({"n": n}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue])  # fmt: skip
    _publish(redis_url, {"copy": 0}, copy=True)
    copies: list[Any] = []
    live = [0]
    left_at_copy: list[int] = []

    def on_message(body: Any, message: Any) -> None:
        if "copy" in body:
            copies.append(body)
            left_at_copy.append(int(redis_client.llen("q1")) + int(redis_client.llen("q2")))
        else:
            live[0] += 1
            time.sleep(0.005)  # a live message always in flight: never quiet
        message.ack()

    with _connection(redis_url) as connection:
        consumer = Consumer(connection.channel(), queues, callbacks=[on_message])
        consumer.qos(prefetch_count=1)
        consumer.consume()
        _drain(connection, 10, lambda: bool(copies))
        channel = consumer.channel
        assert copies == [{"copy": 0}]
        assert left_at_copy[0] > 0  # taken while live messages were still queued
        assert live[0] >= 20 and not channel._waiting  # it was taking in batches
        consumer.cancel()


@pytest.mark.timeout(60)
def test_a_session_s_copy_goes_at_live_priority(redis_url: str) -> None:
    """A session's copy runs beside its primary: deferred past the session's next write,
    it would see that write and report a false mismatch."""
    with _shadowing_client(redis_url) as client:
        client.submit("ping", session_id="sess-1")
        assert _client_lists(client) == {"v3": 1, "v2compat": 1, deferred_list("v2compat"): 0}


@pytest.mark.timeout(60)
def test_a_client_publishes_the_copy_on_the_lane_queue_s_list_of_priority_9(
    redis_url: str,
) -> None:
    """No node runs: what the client sent stays where it put it."""
    with _shadowing_client(redis_url) as client:
        client.submit("ping")
        assert _client_lists(client) == {"v3": 1, "v2compat": 0, deferred_list("v2compat"): 1}
        status = collect_status(client.redis, client.redis, Keys().prefix)
        assert (status["queues"], status["shadow_queued"]) == (
            {"router": 0, "v3": 1, "v2compat": 0}, {"v3": 0, "v2compat": 1},
        )  # fmt: skip


@pytest.mark.timeout(60)
def test_a_copy_is_sent_without_a_task_sent_event_its_primary_has_one(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The copy's sent event was a second PUBLISH on the primary's way; Flower sees the
    copy once a node takes it (it may never: deferred, then trimmed or expired)."""
    with _shadowing_client(redis_url) as client, redis_client.pubsub() as events:
        events.psubscribe("*celeryev*")
        assert events.get_message(timeout=5)["type"] == "psubscribe"
        request_id = client.submit("ping").id
        sent = []
        while (message := events.get_message(timeout=1)) is not None:
            envelope = json.loads(message["data"])
            event = json.loads(base64.b64decode(envelope["body"]))
            sent.append((event["type"], event["uuid"]))
        assert sent == [("task-sent", request_id)]
        assert _client_lists(client)[deferred_list("v2compat")] == 1  # the copy went
        assert client.redis.lrange(deferred_list("v2compat"), 0, -1)[0].count(
            shadow_task_id(request_id).encode()
        )


@pytest.mark.timeout(30)
def test_a_consumer_of_five_queues_gets_its_messages_within_kombu_s_max_connections(
    redis_url: str,
) -> None:
    """Each consumed list has a waiter with a connection of its own; with a list of
    copies per queue, a ``--lane all`` node (4 queues: 8 waiters, beside the channel's
    BRPOP and pub/sub connections) was at kombu's ``max_connections`` (10), and one more
    queue (``celery control add_consumer``, a button in Flower) left the node
    reconnecting for ever on ``MaxConnectionsError``."""
    queues = [Queue(f"m{n}", Exchange(f"m{n}", type="direct"), routing_key=f"m{n}")
              for n in range(5)]  # fmt: skip
    with _connection(redis_url) as connection:
        assert connection.transport_options.get("max_connections", 10) == 10
        got: list[Any] = []

        def on_message(body: Any, message: Any) -> None:
            got.append(body)
            message.ack()

        consumer = Consumer(connection.channel(), queues, callbacks=[on_message])
        consumer.qos(prefetch_count=10)
        consumer.consume()
        _drain(connection, 0.3)
        with Connection(redis_url) as publisher:
            for n, queue in enumerate(queues):
                Producer(publisher).publish(
                    {"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                    declare=[queue],
                )  # fmt: skip
        _drain(connection, 5, lambda: len(got) == 5)
        assert sorted(body["n"] for body in got) == list(range(5))


@pytest.mark.timeout(120)
def test_every_node_caps_both_lanes_copies_even_of_a_lane_it_does_not_serve(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A lane whose nodes are all of an earlier version never reads its copies (a rolling
    deploy stopped half way): any node of this version keeps the list within the cap."""
    backlog = deferred_list("v2compat")
    over = 50
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(pop_defer.BACKLOG_CAP + over):
            pipe.lpush(backlog, f"copy-{n}")
        pipe.execute()
    cluster = Cluster(redis_url, tmp_path, adapter="tests.adapters.clock", pool_size=1)
    with stopped_after(cluster):
        cluster.start("v3", f"trim-{os.getpid()}")
        wait_for(lambda: redis_client.llen(backlog) == pop_defer.BACKLOG_CAP, 20, "the cap")
        newest, oldest = redis_client.lindex(backlog, 0), redis_client.lindex(backlog, -1)
        assert (newest, oldest) == (
            f"copy-{pop_defer.BACKLOG_CAP + over - 1}".encode(), f"copy-{over}".encode(),
        )  # fmt: skip
        status = collect_status(redis_client, redis_client, Keys().prefix)
        assert (status["shadow_dropped"], status["shadow_queued"]["v2compat"]) == (
            over, pop_defer.BACKLOG_CAP,
        )  # fmt: skip


@pytest.mark.timeout(120)
def test_a_copy_older_than_its_pair_record_is_discarded_unrun_and_counted(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies are taken newest first, so the oldest of a backlog run last: once older than
    their primary's pair record (``PAIR_TTL``) they could no longer be compared, and ran
    for nothing on a lane too busy to run them in time, counted nowhere."""
    monkeypatch.setattr(shadow_records, "PAIR_TTL", 1)  # what this client sends with
    client = Client(redis_url=redis_url, routing="direct")
    cluster = Cluster(redis_url, tmp_path, adapter="tests.adapters.clock", pool_size=1)
    try:
        client.redis.hset(Keys().commands, "span", json.dumps({"read_only": True}))
        client.set_shadow(True, 1.0)
        client.set_rollout(100, "test: copies go to V2-compat")
        wait_for(lambda: client.decide("span") == "v3", 5, "the client to see 100 % V3")
        client.submit("span", {"seconds": 0.01})
        assert redis_client.llen(deferred_list("v2compat")) == 1
        time.sleep(1.5)  # no V2-compat node yet: the copy outlives its pair record
        with stopped_after(cluster):
            cluster.start("v2compat", f"expire-{os.getpid()}")
            wait_for(
                lambda: collect_status(redis_client, redis_client, Keys().prefix)[
                    "shadow_expired"] == 1, 20, "the expired copy to be counted",
            )  # fmt: skip
            status = collect_status(redis_client, redis_client, Keys().prefix)
            assert status["shadow_queued"]["v2compat"] == 0
            assert status["lanes"]["v2compat"]["requests"] == 0  # discarded unrun
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_a_key_that_is_not_a_list_does_not_stop_the_other_lane_s_trim(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pop_defer, "BACKLOG_CAP", 5)
    redis_client.set(deferred_list("v3"), "not a list")
    redis_client.lpush(deferred_list("v2compat"), *(f"copy-{n}" for n in range(7)))
    lists = [deferred_list("v3"), deferred_list("v2compat")]
    assert pop_defer.trim_lists(redis_client, lists) == 2
    assert redis_client.lrange(deferred_list("v2compat"), 0, -1) == [
        f"copy-{n}".encode() for n in range(6, 1, -1)
    ]
    assert redis_client.get(deferred_list("v3")) == b"not a list"
    assert "cannot trim the shadow copies" in caplog.text
