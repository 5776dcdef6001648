"""A task's outcome is stored in one round trip, under Celery's own rule (a stored
SUCCESS is never overwritten), on a real redis-server: the same outcomes as Celery's
``RedisBackend`` for any sequence of stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, states
from celery.backends.redis import RedisBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepool.tasks.worker.app import RESULT_EXPIRES
from snakepool.tasks.worker.result_script import SCRIPTED_STORE_MAX_BYTES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def app(node_app: Celery) -> Celery:
    return node_app


@pytest.fixture
def celerys(app: Celery) -> Iterator[RedisBackend]:
    """Celery's own Redis backend on the same Redis and settings: the reference."""
    backend = RedisBackend(app=app, url=app.conf.result_backend.partition("+")[2])
    yield backend
    backend.client.close()


def _stored(app: Celery, task_id: str) -> tuple[str, Any]:
    meta = app.backend.get_task_meta(task_id, cache=False)
    return meta["status"], meta["result"]


def _no_read_first(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    def read(key: Any) -> None:
        raise AssertionError(f"the outcome was read before it was stored ({key!r})")

    monkeypatch.setattr(app.backend, "get", read)


def test_a_stored_success_is_kept_without_a_read_of_its_own(
    app: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_read_first(app, monkeypatch)
    task_id = uuid.uuid4().hex
    with redis_client.pubsub() as pubsub:
        pubsub.subscribe(app.backend.get_key_for_task(task_id))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        app.backend.store_result(task_id, {"pong": True}, states.SUCCESS)
        published = pubsub.get_message(timeout=5)
        assert published is not None and b'"SUCCESS"' in published["data"]
        # A lost worker's duplicate that failed: nothing written, nothing published.
        app.backend.store_result(task_id, ValueError("late"), states.FAILURE)
        app.backend.store_result(task_id, 2, states.SUCCESS)
        assert pubsub.get_message(timeout=0.3) is None
    monkeypatch.undo()
    assert _stored(app, task_id) == (states.SUCCESS, {"pong": True})
    assert 0 < redis_client.ttl(app.backend.get_key_for_task(task_id)) <= RESULT_EXPIRES


@pytest.mark.parametrize("first", [states.STARTED, states.RETRY, states.FAILURE])
def test_any_other_state_is_overwritten(app: Celery, first: str) -> None:
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, {"pid": 1} if first == states.STARTED else None, first)
    app.backend.store_result(task_id, [1, "two"], states.SUCCESS)
    assert _stored(app, task_id) == (states.SUCCESS, [1, "two"])


def test_a_value_that_is_not_json_is_not_a_success(app: Celery, redis_client: redis.Redis) -> None:
    task_id = uuid.uuid4().hex
    key = app.backend.get_key_for_task(task_id)
    for garbage in (b"\x80\x81 not json", b'"SUCCESS"', b"[1, 2]", b'{"status": 7}'):
        redis_client.set(key, garbage)
        app.backend.store_result(task_id, KeyError("k"), states.FAILURE)
        assert _stored(app, task_id)[0] == states.FAILURE
        redis_client.delete(key)


@pytest.mark.parametrize(
    "stored",
    [
        b'{"result": 1, "status": "SUCCESS", "traceback": null}',  # another writer's order
        b'{"status":"SUCCESS","result":1}',  # compact JSON
        # What Redis's cjson cannot decode (a lone surrogate): told by its first bytes.
        b'{"status": "SUCCESS", "result": "name-\\udcff.txt", "traceback": null}',
    ],
)
def test_a_success_stored_otherwise_is_kept(
    app: Celery, redis_client: redis.Redis, stored: bytes
) -> None:
    task_id = uuid.uuid4().hex
    redis_client.set(app.backend.get_key_for_task(task_id), stored)
    app.backend.store_result(task_id, KeyError("late"), states.FAILURE)
    assert redis_client.get(app.backend.get_key_for_task(task_id)) == stored


def _calls(redis_client: redis.Redis, command: str) -> int:
    return int(redis_client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_large_outcome_is_stored_as_celery_does_never_through_the_script(
    app: Celery, redis_client: redis.Redis
) -> None:
    """A script's arguments are copied into Lua and back: megabytes would block Redis."""
    task_id, large = uuid.uuid4().hex, "x" * (SCRIPTED_STORE_MAX_BYTES + 1)
    before = _calls(redis_client, "evalsha")
    app.backend.store_result(task_id, large, states.SUCCESS)
    app.backend.store_result(task_id, KeyError("late duplicate"), states.FAILURE)  # scripted
    app.backend.store_result(task_id, ValueError(large), states.FAILURE)  # large: read first
    assert _calls(redis_client, "evalsha") - before == 1
    assert _stored(app, task_id) == (states.SUCCESS, large)
    other = uuid.uuid4().hex
    app.backend.store_result(other, KeyError("small"), states.FAILURE)
    app.backend.store_result(other, large, states.SUCCESS)  # over a failure: written
    assert _stored(app, other) == (states.SUCCESS, large)


def test_a_celery_without_failure_expires_keeps_failures_as_long_as_results(
    app: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``result_failure_expires`` is Celery 5.7's; pyproject allows earlier versions."""
    monkeypatch.delattr(app.backend, "failure_expires")
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, KeyError("k"), states.FAILURE)
    assert redis_client.ttl(app.backend.get_key_for_task(task_id)) > RESULT_EXPIRES - 10


def test_redis_without_its_scripts_still_stores(app: Celery, redis_client: redis.Redis) -> None:
    """After a Redis restart or SCRIPT FLUSH the script is loaded again as it runs."""
    task_id = uuid.uuid4().hex
    redis_client.script_flush()
    app.backend.store_result(task_id, "after a flush", states.SUCCESS)
    assert _stored(app, task_id) == (states.SUCCESS, "after a flush")
    app.backend.store_result(task_id, "duplicate", states.FAILURE)  # the script is back
    assert _stored(app, task_id) == (states.SUCCESS, "after a flush")


def test_a_failure_keeps_celerys_failure_expiry(app: Celery, redis_client: redis.Redis) -> None:
    app.backend.failure_expires = 77
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, KeyError("k"), states.FAILURE)
    assert 70 < redis_client.ttl(app.backend.get_key_for_task(task_id)) <= 77
    assert _stored(app, task_id)[0] == states.FAILURE


_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs", "Lu"]), max_size=4),  # lone surrogates too
    st.lists(st.booleans(), max_size=3),
    st.text(min_size=1, max_size=1).map(lambda c: c * (SCRIPTED_STORE_MAX_BYTES + 1)),
)
_STATES = st.sampled_from([states.SUCCESS, states.FAILURE, states.STARTED, states.RETRY])
_OUTCOMES = st.lists(st.tuples(_STATES, _VALUES), min_size=1, max_size=6)


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # Celery's
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(outcomes=_OUTCOMES)
def test_any_sequence_ends_as_with_celerys_own_backend(
    app: Celery, celerys: RedisBackend, outcomes: list[tuple[str, Any]]
) -> None:
    ours, theirs = uuid.uuid4().hex, uuid.uuid4().hex
    for state, value in outcomes:
        result = RuntimeError(str(value)) if state in (states.FAILURE, states.RETRY) else value
        app.backend.store_result(ours, result, state)
        celerys.store_result(theirs, result, state)
    expected = celerys.get_task_meta(theirs, cache=False)
    got = app.backend.get_task_meta(ours, cache=False)
    assert got["status"] == expected["status"]
    if expected["status"] in (states.FAILURE, states.RETRY):
        assert str(got["result"]) == str(expected["result"])
    else:
        assert got["result"] == expected["result"]
