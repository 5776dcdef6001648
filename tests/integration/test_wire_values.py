"""Hostile values through a real pool: exact where JSON-able (big integers included),
a typed client error otherwise, and the pool intact either way."""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from snakepool.errors import CommandFailed, InvalidArguments
from snakepool.pool import Pool
from tests.integration.conftest import PoolFactory

HYPOTHESIS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_healthy(pool: Pool) -> None:
    """Every interpreter accounted for (none leaked as busy) and answering."""
    stats = pool.stats()
    assert stats["idle"] + stats["busy"] + stats["starting"] == stats["size"]
    assert pool.execute("ping")["pong"] is True


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 2**63, 10**100, -(3**400)])
def test_integers_of_any_size_are_exact(make_pool: PoolFactory, number: int) -> None:
    pool = make_pool(size=1)
    assert pool.execute("echo", {"n": number, "list": [number]}) == {"n": number, "list": [number]}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2**64", 18446744073709551616),
        ("-(2**63) - 1", -9223372036854775809),
        ("10**100", 10**100),
        ("2**4095", 2**4095),
        ("-(2**4000) * 3", -(2**4000) * 3),
        ("2**64 // 3", 2**64 // 3),
    ],
)
def test_calculator_results_are_exact(
    make_pool: PoolFactory, expression: str, expected: int
) -> None:
    pool = make_pool(size=1)
    result = pool.execute("calculate", {"expression": expression})
    assert result == {"result": expected} and type(result["result"]) is int


def test_values_json_lacks_are_named_client_errors(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"when": datetime.date(2024, 1, 2)}, r"args\['when'\]: date is not JSON-able"),
        ({"a": [{"at": datetime.datetime(2024, 1, 2)}]}, r"args\['a'\]\[0\]\['at'\]: datetime"),
        ({"price": decimal.Decimal("9.99")}, r"args\['price'\]: Decimal is not JSON-able"),
        ({"id": uuid.uuid4()}, r"args\['id'\]: UUID is not JSON-able"),
        ({"tags": {"a"}}, r"args\['tags'\]: set is not JSON-able"),
        ({"text": "\ud800"}, r"args\['text'\]: string is not valid Unicode"),
        ({"k": {(1, 2): "x"}}, r"dict keys must be strings: args\['k'\] has the key \(1, 2\)"),
        ({"k": {1: "one"}}, r"dict keys must be strings: args\['k'\] has the key 1 of type int"),
        ({"deep": _nested(5000)}, "nested more than 256 levels deep"),
        ({"deep": _nested(257)}, "nested more than 256 levels deep"),
    ]
    pid = pool.interpreter_pids()[0]
    for args, message in cases:
        with pytest.raises(InvalidArguments, match=message):
            pool.execute("echo", args)
        assert_healthy(pool)
    assert pool.interpreter_pids() == [pid]  # never a crash: the same interpreter throughout


def test_what_crosses_as_is(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1)
    assert pool.execute("echo", {"t": (1, (2, "x"))}) == {"t": [1, [2, "x"]]}
    assert pool.execute("echo", {"b": b"\x00\xff"}) == {"b": b"\x00\xff"}
    result = pool.execute("echo", {"nan": math.nan, "inf": -math.inf})
    assert math.isnan(result["nan"]) and result["inf"] == -math.inf
    huge = "é" * 1_000_000
    assert pool.execute("echo", {"s": huge})["s"] == huge


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("date", r"result\['when'\]: date is not JSON-able"),
        ("set", r"result\['tags'\]: set is not JSON-able"),
        ("object", r"result\[1\]: object is not JSON-able"),
        ("surrogate", r"result\['text'\]: string is not valid Unicode"),
        ("too_deep", "nested deeper than 1000 levels"),
        ("tuple_key", "result could not be decoded: a dict key is a tuple or list"),
        ("unpacker_limit", "result could not be decoded: nested deeper than 1000"),
        ("too_many_digits", r"result\['n'\]: integer of more than 4300 digits"),
        ("too_many_digits_key", r"result\['k'\] key: integer of more than 4300 digits"),
        ("error_with_date", r"cannot send the error back: error\['data'\]\['when'\]: date"),
    ],
)
def test_results_that_cannot_cross_are_command_failed(
    make_pool: PoolFactory, kind: str, message: str
) -> None:
    pool = make_pool(size=1, adapter="tests.adapters.results")
    pid = pool.interpreter_pids()[0]
    with pytest.raises(CommandFailed, match=message):
        pool.execute("give", {"kind": kind})
    assert_healthy(pool)
    assert pool.interpreter_pids() == [pid]
    assert pool.execute("give", {"kind": "big_int"}) == {"n": 3**500, "m": -(2**64)}


@pytest.mark.parametrize(
    "number", [10**4300, -(10**4300), 10**5000], ids=["1e4300", "-1e4300", "1e5000"]
)
def test_an_integer_of_more_than_4300_digits_in_args_is_invalid_arguments(
    make_pool: PoolFactory, number: int
) -> None:
    # Review item 3: only Pool carried these, so they failed on every other path. The
    # limit is now the same everywhere: refused here, before any interpreter is leased.
    pool = make_pool(size=1)
    pid = pool.interpreter_pids()[0]
    with pytest.raises(InvalidArguments, match=r"args\['n'\]\[0\]: integer of more than 4300"):
        pool.execute("echo", {"n": [number]})
    assert_healthy(pool)
    assert pool.interpreter_pids() == [pid] and pool.stats()["crashes"] == 0


def test_integers_of_4300_digits_are_exact_both_ways(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, adapter="tests.adapters.results")
    largest = 10**4300 - 1
    assert pool.execute("echo", {"n": largest, "m": [-largest]}) == {"n": largest, "m": [-largest]}
    assert pool.execute("give", {"kind": "most_digits"}) == {"n": largest, "m": -largest}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)


@pytest.mark.timeout(120)
def test_any_json_value_comes_back_equal(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2)

    @HYPOTHESIS
    @given(value=json_values)
    def check(value: Any) -> None:
        assert pool.execute("echo", {"value": value}) == {"value": value}

    check()


# What Celery's JSON (kombu.utils.json) decodes into, besides plain JSON.
broker_extras = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False, places=3),
    st.uuids(),
    st.binary(max_size=16),
)
broker_values = st.recursive(
    json_values | broker_extras,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.timeout(120)
def test_any_broker_value_is_a_result_or_invalid_arguments(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2)

    @HYPOTHESIS
    @given(value=broker_values)
    def check(value: Any) -> None:
        delivered = kombu_loads(kombu_dumps({"value": value}))  # as a Celery worker gets it
        try:
            result = pool.execute("echo", delivered)
        except InvalidArguments as exc:
            assert "is not JSON-able" in exc.message and exc.message.startswith("args")
        else:
            assert result == delivered
        assert_healthy(pool)

    check()
