"""Writes sent without waiting (fakeredis): the in-flight record's commands reach Redis in
order, their replies reach their callbacks in order, a refusal is a callback's value (not
a raise), a broken connection is forgotten; and the broker channel's one redis-py client
per pool."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.keys import Keys
from snakepool.tasks.worker.recovery.inflight import InflightRecord
from snakepool.tasks.worker.recovery.pipelined import READ_AFTER, Pipelined


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=40))
def test_replies_reach_their_callbacks_in_order(increments: list[int]) -> None:
    client = fakeredis.FakeRedis()
    writes = Pipelined(client)
    seen: list[Any] = []
    for n in increments:
        writes.send("INCRBY", "counter", n, on_reply=seen.append)
    writes.settle()
    running = [sum(increments[: i + 1]) for i in range(len(increments))]
    assert seen == running
    assert writes.pending == 0
    assert int(client.get("counter") or 0) == running[-1]


def test_a_refused_command_is_its_callbacks_value_and_the_next_ones_still_arrive() -> None:
    client = fakeredis.FakeRedis()
    client.set("text", "x")
    writes = Pipelined(client)
    seen: list[Any] = []
    writes.send("HSET", "text", "field", "1", on_reply=seen.append)  # wrong type
    writes.send("SET", "other", "1", on_reply=seen.append)
    writes.settle()
    assert isinstance(seen[0], redis.ResponseError)
    assert seen[1] is True or seen[1] == b"OK"
    assert client.get("other") == b"1"


def test_a_send_reads_the_replies_already_in_once_enough_are_pending() -> None:
    client = fakeredis.FakeRedis()
    writes = Pipelined(client)
    seen: list[Any] = []
    for i in range(READ_AFTER):
        writes.send("SET", f"k{i}", "1", on_reply=seen.append)  # fakeredis answers at once
    assert seen == [] and writes.pending == READ_AFTER  # no socket check per send
    writes.send("SET", "last", "2", on_reply=seen.append)
    assert len(seen) == READ_AFTER  # those in, read by that send, in order
    assert writes.pending == 1
    writes.settle()
    assert len(seen) == READ_AFTER + 1 and writes.pending == 0


class _BrokenConnection:
    def __init__(self) -> None:
        self.disconnected = False

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("gone")

    def disconnect(self) -> None:
        self.disconnected = True


def test_a_broken_connection_is_forgotten_and_raised() -> None:
    client = fakeredis.FakeRedis()
    writes = Pipelined(client)
    broken = _BrokenConnection()
    writes._connection = broken
    with pytest.raises(redis.ConnectionError):
        writes.send("SET", "a", "1")
    assert broken.disconnected and writes._connection is None
    writes.send("SET", "a", "2")  # a new connection from the pool
    writes.settle()
    assert client.get("a") == b"2"


def test_the_record_is_in_redis_before_the_task_runs_and_gone_after() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("t:")
    client.zadd("unacked_index", {"tag-1": 1234.5})
    record = InflightRecord(client, keys, node="n@h", unacked_index_key="unacked_index")
    record.received("tag-1", task_id="id-1", task="snakepool.v3.execute", queue="v3")
    record.started("tag-1")
    entry = client.hget(record.key, "tag-1")
    assert entry is not None and entry.startswith(b"1234.5 ")
    assert b'"started":' in entry and b'"started":null' not in entry
    assert record.held()["tag-1"].started is not None
    record.finished("tag-1")
    record.held()  # reads the replies
    assert client.hget(record.key, "tag-1") is None
    assert record.held() == {}


def test_a_message_no_longer_unacked_is_not_held() -> None:
    client = fakeredis.FakeRedis()
    record = InflightRecord(client, Keys("t:"), node="n@h", unacked_index_key="unacked_index")
    record.received("tag-2", task_id="id-2", task="t", queue="v3")
    record.started("tag-2")
    assert record.held() == {}
    assert client.hget(record.key, "tag-2") is None


def test_an_entry_accept_wrote_costs_the_record_only_its_started_write() -> None:
    """The reliable pop's ACCEPT wrote the entry and the ack removes it: ``received``
    and ``finished`` send nothing; ``started`` keeps the score ACCEPT wrote."""
    client = fakeredis.FakeRedis()
    record = InflightRecord(client, Keys("t:"), node="n@h", unacked_index_key="unacked_index")
    written = '1234.5 {"task_id":"id-3","task":"t","queue":"v3","received":1,"started":null}'
    client.hset(record.key, "tag-3", written)  # as ACCEPT leaves it
    sent: list[tuple[Any, ...]] = []
    real_send = record._writes.send
    record._writes.send = lambda *c, **k: (sent.append(c), real_send(*c, **k))  # type: ignore[method-assign]
    record.received("tag-3", task_id="id-3", task="t", queue="v3", score="1234.5")
    assert sent == [] and record.held()["tag-3"].score == "1234.5"
    record.started("tag-3")
    assert [c[0] for c in sent] == ["HSET"]
    entry = client.hget(record.key, "tag-3")
    assert entry is not None and entry.startswith(b"1234.5 {") and b'"started":null' not in entry
    record.finished("tag-3")
    assert [c[0] for c in sent] == ["HSET"]  # no HDEL: the ack's MULTI removes it
    assert record.held() == {}
    assert client.hget(record.key, "tag-3") == entry
