"""The reliable pop (``tasks/worker/pop.py``) on a real redis-server: kombu consumers on
our transport, and real nodes frozen and killed with a pop pending.

The loss it removes: a SIGKILLed node's pending BRPOP is still served by Redis for tens
of milliseconds; the message went to a socket nobody read, and was then in neither its
queue nor kombu's ``unacked`` hash. Freezing the node (SIGSTOP) keeps its pop pending as
long as we like, which makes that race deterministic.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from snakepool.config.keys import Keys
from snakepool.tasks.client import Client
from snakepool.tasks.worker.inflight_entry import ACCEPTED_SCORE, InflightEntry
from snakepool.tasks.worker.pop_scripts import SHA
from tests.integration.cluster import NodeProcess
from tests.integration.node_chaos import ResultWatch, chaos_cluster, wait_for

pytestmark = [pytest.mark.integration]

TRANSPORT = "snakepool.tasks.worker.broker:Transport"
INCARNATION = "ab" * 16


def _connection(
    redis_url: str, incarnation: str = INCARNATION, *, record: bool = False
) -> Connection:
    options = {"priority_steps": [0], "processing_list": Keys().processing(incarnation)}
    if record:  # as a node's app sets it (create_app(node=True))
        options["inflight_record"] = Keys().inflight(incarnation)
    return Connection(redis_url, transport=TRANSPORT, transport_options=options)


QUEUES = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ("q1", "q2")]


def _publish(redis_url: str, queue: str, body: Any) -> None:
    with Connection(redis_url) as connection:
        Producer(connection).publish(body, exchange=queue, routing_key=queue, declare=QUEUES)


class Received:
    """What a kombu consumer on our transport got, and when."""

    def __init__(self, connection: Connection, prefetch: int = 10, ack: bool = True) -> None:
        self.bodies: list[Any] = []
        self.at: list[float] = []
        self.ack = ack
        self.channel = connection.channel()
        self.consumer = Consumer(self.channel, QUEUES, callbacks=[self.on_message])
        self.consumer.qos(prefetch_count=prefetch)
        self.consumer.consume()

    def on_message(self, body: Any, message: Any) -> None:
        self.bodies.append(body)
        self.at.append(time.monotonic())
        if self.ack:
            message.ack()


def _drain(connection: Connection, until: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out draining"
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            continue


def _idle(connection: Connection) -> None:
    for _ in range(3):
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.2)


@pytest.mark.timeout(30)
def test_messages_move_through_the_processing_list_in_order_and_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    for i in range(5):
        _publish(redis_url, "q1", {"n": i})
        _publish(redis_url, "q2", {"n": 10 + i})
    with _connection(redis_url) as connection:
        got = Received(connection)
        _drain(connection, lambda: len(got.bodies) == 10, 10)
        assert sorted(b["n"] for b in got.bodies) == [*range(5), *range(10, 15)]
        q1 = [b["n"] for b in got.bodies if b["n"] < 10]
        assert q1 == sorted(q1)  # each queue in its own order
        assert redis_client.llen(Keys().processing(INCARNATION)) == 0
        assert redis_client.llen("q1") == redis_client.llen("q2") == 0
        assert redis_client.hlen("unacked") == 0  # all acknowledged


@pytest.mark.timeout(30)
@pytest.mark.parametrize("queue", ["q1", "q2"])
def test_an_idle_node_gets_a_message_on_any_of_its_queues_at_once(
    redis_url: str, redis_client: redis.Redis, queue: str
) -> None:
    with _connection(redis_url) as connection:
        got = Received(connection)
        _idle(connection)  # the take finds nothing, the waiters block
        blocked = [c for c in redis_client.client_list() if c["cmd"] == "blmove"]
        assert len(blocked) == 2, blocked  # one per list
        sent: list[float] = []

        def publish_later() -> None:
            time.sleep(0.3)
            sent.append(time.monotonic())
            _publish(redis_url, queue, {"queue": queue})

        thread = threading.Thread(target=publish_later)
        thread.start()
        _drain(connection, lambda: bool(got.bodies), 5)
        thread.join()
        waited = got.at[0] - sent[0]
        assert got.bodies == [{"queue": queue}]
        # kombu's BRPOP timeout is 1 s: a round-robin over the lists would show it.
        assert waited < 0.25, f"delivered {waited:.3f} s after it was sent"


@pytest.mark.timeout(30)
def test_a_message_beyond_the_prefetch_goes_back_to_the_head_of_its_queue(
    redis_url: str, redis_client: redis.Redis
) -> None:
    _publish(redis_url, "q1", {"n": 0})
    _publish(redis_url, "q2", {"n": 1})
    messages = [redis_client.rpop("q1"), redis_client.rpop("q2")]
    with _connection(redis_url) as connection:
        got = Received(connection, prefetch=1, ack=False)
        _idle(connection)
        assert len([c for c in redis_client.client_list() if c["cmd"] == "blmove"]) == 2
        # Both waiters are served at once (after EXEC); the node has credit for one.
        with redis_client.pipeline(transaction=True) as pipe:
            pipe.lpush("q1", messages[0])
            pipe.lpush("q2", messages[1])
            pipe.execute()
        _drain(connection, lambda: bool(got.bodies), 5)
        _idle(connection)  # reads the other reply: no credit, so it goes back
        assert len(got.bodies) == 1
        assert redis_client.llen("q1") + redis_client.llen("q2") == 1
        assert redis_client.llen(Keys().processing(INCARNATION)) == 0
        assert redis_client.hlen("unacked") == 1


@pytest.mark.timeout(30)
def test_what_a_lost_reply_left_on_the_processing_list_goes_back_to_its_queue(
    redis_url: str, redis_client: redis.Redis
) -> None:
    _publish(redis_url, "q2", {"lost": True})
    processing = Keys().processing(INCARNATION)
    redis_client.lmove("q2", processing, "RIGHT", "LEFT")  # as a BLMOVE whose reply was lost
    with _connection(redis_url) as connection:
        got = Received(connection)
        _drain(connection, lambda: bool(got.bodies), 5)
        assert got.bodies == [{"lost": True}]
        assert redis_client.llen(processing) == 0


# ------------------------------------------------------------ real nodes, frozen


def _frozen_with_a_pending_pop(node: NodeProcess, redis_client: redis.Redis) -> None:
    """SIGSTOP the node once Redis shows its blocking pop pending (the only node)."""
    for _ in range(50):
        os.kill(node.process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if any(c["cmd"] in ("brpop", "blmove") for c in redis_client.client_list()):
                return
            time.sleep(0.01)
        os.kill(node.process.pid, signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("the node never had a blocking pop pending")


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_request_popped_by_a_node_as_it_dies_is_answered_by_another(
    redis_url: str, tmp_path: Path
) -> None:
    client = Client(redis_url=redis_url, routing="direct")
    watch = ResultWatch(redis_url)
    try:
        with chaos_cluster(redis_url, tmp_path, ("v3", "v3-a")) as (cluster, started):
            client.wait_for_flags(client.set_rollout(100, "test")["version"])
            assert client.execute("calculate", {"expression": "1+1"}) == {"result": 2}
            victim, redis_client = started[0], cluster.redis
            for attempt in range(10):
                _frozen_with_a_pending_pop(victim, redis_client)
                pending = client.submit("calculate", {"expression": f"6*7+{attempt}"})
                if redis_client.llen("v3") == 0:  # the frozen node's pop took it
                    break
                os.kill(victim.process.pid, signal.SIGCONT)  # its pop had just timed out
                assert pending.get(timeout=30) == {"result": 42 + attempt}
            else:
                raise AssertionError("the frozen node's pop never took the request")
            cluster.kill(victim)  # SIGKILL: it never reads the reply
            killed = time.monotonic()
            survivor = cluster.start("v3", "v3-b")
            assert pending.get(timeout=60) == {"result": 42 + attempt}
            print(f"answered by {survivor.name} {time.monotonic() - killed:.1f} s after the "
                  "kill (its start included)")  # fmt: skip
            assert pending.worker == survivor.hostname
            wait_for(lambda: watch.counts()[pending.id] >= 1, 5, "the stored result")
            time.sleep(1)  # a second delivery would store a second result
            assert watch.counts()[pending.id] == 1
    finally:
        watch.close()
        client.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("record", [False, True])
def test_a_message_whose_accept_reply_was_lost_goes_back_to_its_queue(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, record: bool
) -> None:
    """ACCEPT ran (the message in ``unacked``, off the processing list) but its reply was
    lost with the connection: the node never delivered it. It sat in ``unacked`` until
    ``VISIBILITY_TIMEOUT`` (an hour): nobody settles a live node's unknown message."""
    _publish(redis_url, "q1", {"accept": "lost"})
    real, lost = redis.Redis.evalsha, []

    def evalsha(self: redis.Redis, sha: str, *args: Any) -> Any:
        reply = real(self, sha, *args)
        if sha == SHA["accept"] and not lost:
            lost.append(args)
            raise redis.ConnectionError("the reply was lost with the connection")
        return reply

    monkeypatch.setattr(redis.Redis, "evalsha", evalsha)
    with _connection(redis_url, record=record) as connection:
        got = Received(connection)
        deadline = time.monotonic() + 10
        while not got.bodies and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, redis.ConnectionError):
                connection.drain_events(timeout=0.2)
        assert lost, "the accept never ran"
        assert got.bodies == [{"accept": "lost"}]
        assert redis_client.hlen("unacked") == 0  # acknowledged: nothing left for an hour
        assert redis_client.llen(Keys().processing(INCARNATION)) == 0
        # The entry ACCEPT wrote went with the restore (and the redelivery's with its ack).
        assert redis_client.hlen(Keys().inflight(INCARNATION)) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("settle", ["ack", "requeue", "reject"])
def test_accept_writes_the_in_flight_entry_and_the_ack_removes_it(
    redis_url: str, redis_client: redis.Redis, settle: str
) -> None:
    """The node's in-flight entry is written by the script that makes the message
    unacknowledged, with the very score recovery compares, and leaves Redis in the
    transaction that acknowledges, requeues or rejects it: no command of its own."""
    with Connection(redis_url) as connection:
        Producer(connection).publish(
            {"n": 1}, exchange="q1", routing_key="q1", declare=QUEUES,
            headers={"id": "task-1", "task": "snakepool.v3.execute"},
        )  # fmt: skip
    record = Keys().inflight(INCARNATION)
    with _connection(redis_url, record=True) as connection:
        got = Received(connection, ack=False)
        held: list[Any] = []
        got.consumer.on_message = None
        got.consumer.callbacks = [lambda body, message: held.append(message)]
        _drain(connection, lambda: bool(held), 10)
        message = held[0]
        tag = message.delivery_tag
        score = redis_client.zscore("unacked_index", tag)
        entry = InflightEntry.decode(redis_client.hget(record, tag) or b"")
        assert float(entry.score) == score
        assert message.delivery_info[ACCEPTED_SCORE] == entry.score
        assert (entry.task_id, entry.task, entry.queue) == ("task-1", "snakepool.v3.execute", "q1")
        assert entry.started is None and abs(entry.received - time.time()) < 60
        if settle == "ack":
            message.ack()
        else:
            message.reject(requeue=settle == "requeue")
        assert redis_client.hlen(record) == 0
        assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
        assert redis_client.llen("q1") == (1 if settle == "requeue" else 0)
