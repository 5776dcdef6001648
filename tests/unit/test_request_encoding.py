"""Requests are checked and encoded before any interpreter is leased (issue 8.3).

Whatever the wire cannot carry, or a command must not receive (non-str keys, absurd
nesting), is :class:`InvalidArguments` in the caller's thread — never a raw
``TypeError``, never a crashed interpreter.
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.errors import InvalidArguments, PayloadTooLarge
from snakepool.pool.interpreter import wire
from snakepool.pool.request import MAX_NESTING, encode_request

LIMIT = 1 << 20

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
unsendable_values = st.sampled_from(
    [
        datetime.date(2026, 11, 30),
        datetime.datetime(2026, 11, 30, 12, 0),
        {1, 2},
        frozenset({"a"}),
        object(),
        1 + 2j,
        decimal.Decimal("1.5"),
        "\ud800",  # a lone surrogate: not encodable as UTF-8
    ]
)
non_str_keys = st.sampled_from([1, 2.5, None, True, (1, 2), b"key", frozenset()])


def nest(value: Any, wrappers: list[str]) -> Any:
    """``value`` inside lists / dicts, innermost first."""
    for kind in wrappers:
        value = [value] if kind == "list" else {"k": value}
    return value


def decoded_args(framed: bytes) -> Any:
    return wire.decode_request(framed[wire.HEADER.size :])[2]


@settings(max_examples=50, deadline=None)
@given(args=st.dictionaries(st.text(max_size=8), json_like, max_size=5))
def test_json_like_args_encode_and_round_trip(args: dict[str, Any]) -> None:
    assert decoded_args(encode_request(7, "echo", args, limit=LIMIT)) == args


@settings(max_examples=50, deadline=None)
@given(
    good=st.dictionaries(st.text(max_size=8), json_like, max_size=3),
    bad=unsendable_values,
    wrappers=st.lists(st.sampled_from(["list", "dict"]), max_size=5),
)
def test_an_unsendable_value_anywhere_is_invalid_arguments(
    good: dict[str, Any], bad: Any, wrappers: list[str]
) -> None:
    args = {**good, "bad": nest(bad, wrappers)}
    with pytest.raises(InvalidArguments, match="cannot be sent") as caught:
        encode_request(1, "echo", args, limit=LIMIT)
    assert caught.value.category == "client" and caught.value.command == "echo"


@settings(max_examples=50, deadline=None)
@given(
    good=st.dictionaries(st.text(max_size=8), json_like, max_size=3),
    key=non_str_keys,
    wrappers=st.lists(st.sampled_from(["list", "dict"]), max_size=5),
)
def test_a_non_str_key_anywhere_is_invalid_arguments(
    good: dict[str, Any], key: Any, wrappers: list[str]
) -> None:
    args = {**good, "bad": nest({key: 1}, wrappers)}
    with pytest.raises(InvalidArguments, match="keys must be strings") as caught:
        encode_request(1, "echo", args, limit=LIMIT)
    assert caught.value.key_type == type(key).__name__
    assert caught.value.path.startswith("args['bad']")


def test_the_reported_inputs_are_invalid_arguments() -> None:
    deep: list[Any] = []
    for _ in range(600):
        deep = [deep]
    cases = {
        "date": {"when": datetime.date(2026, 11, 30)},
        "set": {"tags": {"a", "b"}},
        "object": {"thing": object()},
        "key": {"outer": {3: "three"}},
        "nested": {"deep": deep},
    }
    for needle, args in cases.items():
        with pytest.raises(InvalidArguments, match=needle):
            encode_request(1, "echo", args, limit=LIMIT)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 600, 5_000, 100_000])
def test_nesting_past_the_limit_is_refused_without_recursing(depth: int) -> None:
    deep: Any = "leaf"
    for i in range(depth - 1):
        deep = [deep] if i % 2 else {"d": deep}
    with pytest.raises(InvalidArguments, match=f"nested more than {MAX_NESTING} levels"):
        encode_request(1, "echo", {"x": deep}, limit=LIMIT)


def test_nesting_up_to_the_limit_is_fine() -> None:
    deep: Any = 1
    for _ in range(MAX_NESTING - 1):  # the args dict itself is the first level
        deep = [deep]
    assert decoded_args(encode_request(1, "echo", {"x": deep}, limit=LIMIT)) == {"x": deep}


def test_a_cycle_is_refused() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(InvalidArguments, match="nested more than"):
        encode_request(1, "echo", looped, limit=LIMIT)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("", {}, "non-empty string"),
        (None, {}, "non-empty string"),
        ("echo", ["a", "list"], "must be a dict, not list"),
        ("echo", "text", "must be a dict, not str"),
    ],
)
def test_bad_command_or_args_type(command: Any, args: Any, message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        encode_request(1, command, args, limit=LIMIT)


def test_oversize_request_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        encode_request(1, "echo", {"blob": "x" * 2000}, limit=1000)
    assert caught.value.direction == "request" and caught.value.limit == 1000
    assert caught.value.size > 2000
