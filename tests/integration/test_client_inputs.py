"""What a caller of ``Client`` / ``AsyncClient`` gets wrong is refused before anything is
sent, with a typed error (review items 3, 4, 5) — on a real Redis with no node running,
so that "nothing was sent" can be seen in the queues.

- args Celery's JSON cannot encode: ``InvalidArguments`` naming the value, not kombu's
  ``EncodeError`` or a raw ``ValueError`` (an integer of more than 4300 digits);
- session metadata JSON cannot carry: ``InvalidArguments``, not a raw ``TypeError``;
- a wait ``timeout`` that cannot be waited on: ``InvalidArguments`` before sending;
- no result in time: ``ResultTimeout`` (a ``SnakepoolError``, the builtin
  ``TimeoutError`` and Celery's), carrying the task id.
"""

from __future__ import annotations

import asyncio
import enum
import fractions
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import celery.exceptions
import pytest
import redis

from snakepool import AsyncClient, Client, errors
from tests.integration.cluster import ROOT

pytestmark = [pytest.mark.integration]

QUEUES = ("router", "v3", "v2compat")


class Colour(enum.Enum):
    RED = 1


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def queued(redis_url: str) -> int:
    """Messages waiting on the lanes' and the router's queues."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.llen(queue)) for queue in QUEUES)
    finally:
        client.close()


@pytest.fixture(params=["router", "direct"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Client]:
    client = Client(redis_url=redis_url, routing=request.param)
    yield client
    client.close()


#: The review's list: each was a raw kombu EncodeError (or ValueError) from execute().
UNSENDABLE: list[tuple[Any, str]] = [
    ({1, 2}, r"args\['v'\]: set is not JSON-able"),
    (frozenset({1}), r"args\['v'\]: frozenset is not JSON-able"),
    (1j, r"args\['v'\]: complex is not JSON-able"),
    (fractions.Fraction(1, 3), r"args\['v'\]: Fraction is not JSON-able"),
    (Colour.RED, r"args\['v'\]: Colour is not JSON-able"),
    (bytearray(b"x"), r"args\['v'\]: bytearray is not JSON-able"),
    (memoryview(b"x"), r"args\['v'\]: memoryview is not JSON-able"),
    ({(1, 2): "x"}, r"args\['v'\]: key \(1, 2\) is a tuple; keys must be strings"),
    ([1, object()], r"args\['v'\]\[1\]: object is not JSON-able"),
    (_nested(2000), r"nested deeper than 256 levels"),
    ({"n": 10**5000}, r"args\['v'\]\['n'\]: integer of more than 4300 digits"),
    ([-(10**4300)], r"args\['v'\]\[0\]: integer of more than 4300 digits"),
]
IDS = ["set", "frozenset", "complex", "Fraction", "Enum", "bytearray", "memoryview",
       "tuple-key", "object", "deep", "int-5000", "int-4301"]  # fmt: skip


@pytest.mark.parametrize(("value", "message"), UNSENDABLE, ids=IDS)
def test_args_celery_json_cannot_carry_are_invalid_arguments_and_nothing_is_sent(
    client: Client, redis_url: str, value: Any, message: str
) -> None:
    for call in (client.submit, client.execute):
        with pytest.raises(errors.InvalidArguments, match=message) as refused:
            call("echo", {"v": value})
        assert "cannot be sent" in refused.value.message
        assert refused.value.command == "echo"
    assert queued(redis_url) == 0
    client.submit("echo", {"v": 10**4300 - 1})  # the largest integer goes out
    assert queued(redis_url) == 1


def test_async_client_refuses_the_same_args(redis_url: str) -> None:
    async def attempt() -> None:
        async with AsyncClient(redis_url=redis_url) as client:
            for value, message in UNSENDABLE:
                with pytest.raises(errors.InvalidArguments, match=message):
                    await client.execute("echo", {"v": value})

    asyncio.run(attempt())
    assert queued(redis_url) == 0


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"a": {1}}, r"metadata\['a'\]: set is not JSON-able"),
        ({"n": [10**5000]}, r"metadata\['n'\]\[0\]: integer of more than 4300 digits"),
        ({(1,): 1}, r"metadata: key \(1,\) is a tuple"),
    ],
    ids=["set", "long-int", "tuple-key"],
)
def test_session_metadata_json_cannot_carry_is_invalid_arguments(
    client: Client, metadata: dict[Any, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidArguments, match=message):
        client.create_session(metadata=metadata)
    assert client.store.count() == 0
    session_id = client.create_session(metadata={"n": 10**4300 - 1})
    assert client.get_session(session_id)["metadata"] == {"n": 10**4300 - 1}  # type: ignore[index]


BAD_WAITS: list[Any] = ["x", "5", -1, 0, math.inf, math.nan, 1e300, True, [1], 86400.5]


def test_a_bad_wait_timeout_is_refused_before_anything_is_sent(
    client: Client, redis_url: str
) -> None:
    for timeout in BAD_WAITS:
        with pytest.raises(errors.InvalidArguments, match="timeout must be a number of seconds"):
            client.execute("ping", timeout=timeout)
    assert queued(redis_url) == 0


def test_async_client_refuses_a_bad_wait_timeout_before_sending(redis_url: str) -> None:
    async def attempt() -> None:
        async with AsyncClient(redis_url=redis_url) as client:
            for timeout in BAD_WAITS:
                with pytest.raises(errors.InvalidArguments, match="timeout must be a number"):
                    await client.execute("ping", timeout=timeout)
            result = await client.submit("ping")
            with pytest.raises(errors.InvalidArguments, match="timeout must be a number"):
                await client.wait(result, timeout=-1)

    asyncio.run(attempt())
    assert queued(redis_url) == 1  # only the one submitted on purpose


def _assert_result_timeout(caught: BaseException, waited: float) -> None:
    assert isinstance(caught, errors.ResultTimeout) and isinstance(caught, errors.SnakepoolError)
    assert isinstance(caught, TimeoutError)  # `except TimeoutError` catches it
    assert isinstance(caught, celery.exceptions.TimeoutError)  # and what callers caught before
    assert caught.timeout == waited and caught.category == "timeout" and not caught.retryable
    assert f"within {waited:g} s" in caught.message and caught.task_id in caught.message


def test_no_result_in_time_is_a_result_timeout(client: Client, redis_url: str) -> None:
    with pytest.raises(errors.ResultTimeout) as caught:
        client.execute("ping", timeout=0.3)
    _assert_result_timeout(caught.value, 0.3)
    assert queued(redis_url) == 1  # it was sent, and may still run: it is not lost


def test_async_no_result_in_time_is_a_result_timeout(redis_url: str) -> None:
    async def attempt() -> BaseException:
        async with AsyncClient(redis_url=redis_url) as client:
            try:
                await client.execute("ping", timeout=0.3)
            except TimeoutError as exc:
                return exc
        raise AssertionError("no timeout")

    _assert_result_timeout(asyncio.run(attempt()), 0.3)


def test_cli_call_with_an_integer_past_the_limit_is_a_typed_error(redis_url: str) -> None:
    # Parsed before anything else: no node, no traceback, nothing sent.
    for args in (["--direct"], []):
        done = subprocess.run(
            [sys.executable, "-m", "snakepool.tasks.cli", "call", "echo",
             '{"n": ' + "1" * 5000 + "}", *args],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
                 "SNAKEPOOL_REDIS_URL": redis_url},
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert "InvalidArguments: ARGS['n']: integer of more than 4300 digits" in " ".join(
            output.split()
        )
        assert "Traceback" not in output
    assert queued(redis_url) == 0


def test_other_waits_and_rates_are_checked_too(client: Client) -> None:
    for timeout in ("x", -1, math.inf):
        with pytest.raises(errors.InvalidArguments, match="timeout must be a number of seconds"):
            client.wait_for_flags(1, timeout=timeout)
    with pytest.raises(errors.InvalidArguments, match="version must be an int, not str"):
        client.wait_for_flags("1", timeout=1)  # type: ignore[arg-type]
    for rate in ("x", [0.5], True):
        with pytest.raises(errors.InvalidArguments, match=r"shadow rate must be .* from 0 to 1"):
            client.set_shadow(True, rate)
    assert client.set_shadow(True, 0.25)["shadow_rate"] == 0.25

    async def attempt() -> None:
        async with AsyncClient(redis_url=client.settings.redis_url) as aclient:
            with pytest.raises(errors.InvalidArguments, match="timeout must be a number"):
                await aclient.wait_for_flags(1, timeout="x")  # type: ignore[arg-type]

    asyncio.run(attempt())
