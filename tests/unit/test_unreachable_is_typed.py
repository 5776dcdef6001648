"""Redis or the broker unreachable inside any snakepool task is a typed PoolUnavailable
(issue 9 item 6: the router's flag read during a Redis restart ended a request with a
bare redis ConnectionError)."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu.exceptions import OperationalError

from snakepool.config import load_settings
from snakepool.errors import InvalidArguments, PoolUnavailable
from snakepool.tasks.worker.app import SnakepoolTask, create_app


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Connection closed by server."),
        redis.TimeoutError("Timeout reading from socket"),
        OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ],
)
def test_unreachable_redis_or_broker_is_pool_unavailable(error: Exception) -> None:
    app = create_app(load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}"), node=True)

    @app.task(name=f"t.{uuid.uuid4().hex}")  # type: ignore[untyped-decorator]
    def fails() -> None:
        raise error

    assert isinstance(fails, SnakepoolTask)
    with pytest.raises(PoolUnavailable, match="unreachable") as raised:
        fails.apply().get()
    assert raised.value.data == {"reason": "unreachable"}
    assert raised.value.__cause__ is error


def test_other_errors_pass_through_unchanged() -> None:
    app = create_app(load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}"))

    @app.task(name=f"t.{uuid.uuid4().hex}")  # type: ignore[untyped-decorator]
    def refuses() -> None:
        raise InvalidArguments("bad")

    with pytest.raises(InvalidArguments, match="bad"):
        refuses.apply().get()
    assert refuses.apply().get(propagate=False).message == "bad"
