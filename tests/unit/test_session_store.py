"""SessionStore on fakeredis (the same tests run on a real server in integration)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def _server_now(store: SessionStore) -> float:
    seconds, micros = store.client.time()
    return float(seconds) + micros / 1e6


def test_the_index_is_scored_by_expiry_and_moves_on_access(store: SessionStore) -> None:
    sid = store.create(ttl=100)
    first = store.client.zscore(store.keys.session_index, sid)
    assert first is not None and abs(first - (_server_now(store) + 100)) < 5
    store.client.zadd(store.keys.session_index, {sid: first - 50})  # as if used long ago
    assert store.get(sid) is not None  # an access pushes the expiry, and the score, out
    assert store.client.zscore(store.keys.session_index, sid) == pytest.approx(first, abs=5)
    store.client.zadd(store.keys.session_index, {sid: first - 50})
    store.put_program(sid, "p", {"signature": "q -> a"})  # so does a program write
    assert store.client.zscore(store.keys.session_index, sid) == pytest.approx(first, abs=5)


def test_expired_ids_leave_the_index_on_write_and_on_read(store: SessionStore) -> None:
    live = [store.create(ttl=600) for _ in range(3)]
    gone = [store.create(ttl=600) for _ in range(4)]
    for sid in gone:  # as if they expired: their key and their score are in the past
        store.client.delete(store.keys.session(sid))
        store.client.zadd(store.keys.session_index, {sid: _server_now(store) - 1})
    assert store.client.zcard(store.keys.session_index) == 7
    assert store.count() == 3  # a read prunes
    for sid in gone:
        store.client.zadd(store.keys.session_index, {sid: _server_now(store) - 1})
    newest = store.create()  # and so does a write
    assert store.client.zcard(store.keys.session_index) == 4
    assert sorted(store.client.zrange(store.keys.session_index, 0, -1)) == sorted(
        s.encode() for s in [*live, newest]
    )


def test_list_drops_malformed_ids_an_older_version_indexed(store: SessionStore) -> None:
    sid = store.create(session_id="fine")
    store.client.zadd(store.keys.session_index, {"abc\n": _server_now(store) + 100})
    assert [s["id"] for s in store.list()] == [sid]
    assert store.client.zrange(store.keys.session_index, 0, -1) == [b"fine"]


def test_a_session_holds_a_bounded_number_of_programs(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakepool.sessions import store as store_module

    monkeypatch.setattr(store_module, "MAX_PROGRAMS_PER_SESSION", 3)
    sid = store.create()
    for name in ("a", "b", "c"):
        store.put_program(sid, name, {"signature": "q -> a"})
    with pytest.raises(InvalidArguments, match="already holds 3 programs"):
        store.put_program(sid, "d", {"signature": "q -> a"})
    store.put_program(sid, "a", {"signature": "x -> y"})  # replacing one is fine
    assert store.client.hlen(store.keys.programs(sid)) == 3
    assert store.get_program(sid, "a") == {"signature": "x -> y"}


# ------------------------------------------- metadata that JSON cannot carry (review item 4)


class _Opaque:
    pass


def _nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _circular() -> dict[str, Any]:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    return looped


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"a": {1}}, r"metadata\['a'\]: set is not JSON-able"),
        ({"a": [1, 1j]}, r"metadata\['a'\]\[1\]: complex is not JSON-able"),
        ({"a": _Opaque()}, r"metadata\['a'\]: _Opaque is not JSON-able"),
        ({(1, 2): "x"}, r"metadata: key \(1, 2\) is a tuple; keys must be strings"),
        ({"n": 10**5000}, r"metadata\['n'\]: integer of more than 4300 digits"),
        ({"deep": _nested_list(300)}, r"nested deeper than 256 levels"),
        (_circular(), r"metadata cannot be written as JSON: Circular reference"),
        ([1, 2], r"metadata must be a JSON object, not list"),
        ({1, 2}, r"metadata must be a JSON object, not set"),
    ],
    ids=[
        "set",
        "complex",
        "object",
        "tuple-key",
        "long-int",
        "deep",
        "circular",
        "list",
        "set-top",
    ],
)
def test_metadata_json_cannot_carry_is_invalid_arguments_and_stores_nothing(
    store: SessionStore, metadata: Any, message: str
) -> None:
    with pytest.raises(InvalidArguments, match=message):
        store.create(metadata=metadata, session_id="refused")
    assert store.get("refused") is None and store.count() == 0


def test_metadata_json_carries_comes_back_exactly(store: SessionStore) -> None:
    metadata = {"n": 10**4300 - 1, "m": -(10**4300 - 1), "list": [1, 2.5, None, True, "x"]}
    session = store.get(store.create(metadata=metadata))
    assert session is not None and session["metadata"] == metadata


def test_a_session_id_cannot_name_another_sessions_programs_key() -> None:
    """Review finding: ``victim:programs`` used to be the key of ``victim``'s programs."""
    import fakeredis

    from snakepool.sessions import SessionStore

    store = SessionStore(fakeredis.FakeRedis(), prefix="t:")
    victim = store.create()
    store.put_program(victim, "qa", {"signature": "question -> answer"})
    intruder = store.create(session_id=f"{victim}:programs")
    assert intruder == f"{victim}:programs"
    assert store.programs(victim) == {"qa": {"signature": "question -> answer"}}
    assert store.get_program(victim, "qa") == {"signature": "question -> answer"}
    assert store.programs(intruder) == {}
