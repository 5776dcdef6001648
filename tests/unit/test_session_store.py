"""SessionStore on fakeredis (the same tests run on a real server in integration)."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from snakepool.errors import InvalidArguments, SessionNotFound
from snakepool.sessions import SessionStore


@pytest.fixture(params=["fake", "real"])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "fake":
        client = fakeredis.FakeRedis()
    else:
        import redis

        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield SessionStore(client, prefix="t:", default_ttl=60)
    client.close()


def test_create_get_delete(store: SessionStore) -> None:
    sid = store.create(metadata={"user": "ada"})
    session = store.get(sid)
    assert session is not None
    assert session["id"] == sid and session["metadata"] == {"user": "ada"}
    assert session["ttl"] == 60 and session["programs"] == []
    assert 0 < store.client.ttl(store.keys.session(sid)) <= 60
    assert store.delete(sid) and store.get(sid) is None and not store.delete(sid)


def test_ttl_is_native_and_refreshed(store: SessionStore) -> None:
    sid = store.create(ttl=100)
    store.client.expire(store.keys.session(sid), 5)
    assert store.touch(sid)
    assert store.client.ttl(store.keys.session(sid)) > 90
    store.client.delete(store.keys.session(sid))  # as if it expired
    assert store.get(sid) is None and not store.touch(sid)


def test_programs_one_field_each(store: SessionStore) -> None:
    sid = store.create(session_id="s-1")
    store.put_program(sid, "a", {"signature": "q -> a"})
    store.put_program(sid, "b", {"signature": "x -> y"})
    assert store.programs(sid) == {"a": {"signature": "q -> a"}, "b": {"signature": "x -> y"}}
    assert store.get(sid)["programs"] == ["a", "b"]
    assert store.get_program(sid, "a") == {"signature": "q -> a"}
    assert store.delete_program(sid, "a") and store.get_program(sid, "a") is None
    programs_ttl = store.client.ttl(store.keys.programs(sid))
    assert 0 < programs_ttl <= 60


def test_put_program_needs_the_session(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        store.put_program("nobody", "p", {"signature": "q -> a"})
    assert not store.client.exists(store.keys.programs("nobody"))


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "semi;colon", "../up"])
def test_session_ids_are_validated(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidArguments, match="invalid session id"):
        store.create(session_id=bad)
    with pytest.raises(InvalidArguments):
        store.get(bad)


def test_limits(store: SessionStore) -> None:
    with pytest.raises(InvalidArguments, match="metadata"):
        store.create(metadata={"blob": "x" * 70_000})
    with pytest.raises(InvalidArguments, match="ttl"):
        store.create(ttl=0)
    sid = store.create()
    with pytest.raises(InvalidArguments, match="larger than"):
        store.put_program(sid, "p", {"signature": "q -> a", "instructions": "x" * 300_000})


def test_list_and_binding(store: SessionStore) -> None:
    first, second = store.create(session_id="one"), store.create(session_id="two")
    assert store.bind(first, "node-a") and store.binding(first) == "node-a"
    assert store.binding(second) is None
    store.client.delete(store.keys.session(second))  # expired
    listed = store.list()
    assert [s["id"] for s in listed] == ["one"] and listed[0]["v2_node"] == "node-a"
    assert not store.bind("two", "node-a")  # never resurrects a gone session
    assert not store.client.exists(store.keys.session("two"))
