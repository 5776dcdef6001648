"""What may take a JSON hop (Celery messages, JSON in Redis), and the integer policy:
exact up to 4300 digits, a typed error past it — the same limit on every path."""

from __future__ import annotations

import enum
import fractions
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import json_values
from snakepool.config.json_values import MAX_INT_DIGITS, check_json, json_problem, parse_json
from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter import values as wire_values


class Colour(enum.Enum):
    RED = 1


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def test_every_path_has_the_same_integer_limit_as_python() -> None:
    # The pipe, the JSON hops and Python's default int/str limit agree: an integer is
    # exact on every path or refused on every path.
    assert MAX_INT_DIGITS == wire_values.MAX_INT_DIGITS == 4300
    assert sys.int_info.default_max_str_digits == MAX_INT_DIGITS
    json.loads("9" * MAX_INT_DIGITS)  # the largest such integer parses
    with pytest.raises(ValueError, match="4300"):
        json.loads("9" * (MAX_INT_DIGITS + 1))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({1, 2}, "args['v']: set is not JSON-able"),
        (frozenset(), "args['v']: frozenset is not JSON-able"),
        (1j, "args['v']: complex is not JSON-able"),
        (fractions.Fraction(1, 3), "args['v']: Fraction is not JSON-able"),
        (Colour.RED, "args['v']: Colour is not JSON-able"),
        (bytearray(b"x"), "args['v']: bytearray is not JSON-able"),
        (memoryview(b"x"), "args['v']: memoryview is not JSON-able"),
        ({(1, 2): "x"}, "args['v']: key (1, 2) is a tuple; keys must be strings"),
        ([0, object()], "args['v'][1]: object is not JSON-able"),
        ({"n": 10**4300}, "args['v']['n']: integer of more than 4300 digits"),
        ([-(10**5000)], "args['v'][0]: integer of more than 4300 digits"),
        ({10**4300: 1}, "args['v'] key: integer of more than 4300 digits"),
        (_nested(2000), "nested deeper than 256 levels"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_the_first_value_that_cannot_take_the_hop_is_named(value: Any, problem: str) -> None:
    found = json_problem({"v": value}, "args")
    assert found is not None and (found.startswith(problem) or found.endswith(problem)), found
    with pytest.raises(InvalidArguments) as refused:
        check_json({"v": value}, "args")
    assert refused.value.message == found


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"a": [1, 2.5, "x", True, None, {"b": []}]},
        {"n": 10**4300 - 1, "m": -(10**4300 - 1)},
        {1: "int keys are written as strings, as json does", 2.5: 0, None: 1, False: 2},
        (1, 2),
        _nested(255),
        float("nan"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_what_json_carries_passes(value: Any) -> None:
    assert json_problem(value, "args") is None
    check_json(value, "args")


def test_a_value_shared_many_times_is_walked_once() -> None:
    shared: Any = [1]
    for _ in range(200):  # 2**200 paths through 201 lists
        shared = [shared, shared]
    assert json_problem(shared, "args") is None


def test_the_encoders_extra_types_pass_when_named() -> None:
    assert json_problem({"b": b"x"}, "args") == "args['b']: bytes is not JSON-able"
    assert json_problem({"b": b"x"}, "args", also=(bytes,)) is None


json_scalars = (
    st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=20)
    | st.integers(min_value=-(10**4300) + 1, max_value=10**4300 - 1)
)
json_like = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None)
@given(value=json_like)
def test_anything_json_writes_and_parses_back_passes(value: Any) -> None:
    assert json_problem(value, "args") is None
    text = json.dumps(value)  # and json agrees: it round-trips
    assert json.dumps(json.loads(text)) == text


@settings(max_examples=30, deadline=None)
@given(value=json_like, digits=st.integers(min_value=4301, max_value=4400))
def test_an_integer_past_the_limit_anywhere_is_named(value: Any, digits: int) -> None:
    problem = json_problem({"ok": value, "zz": [10 ** (digits - 1)]}, "args")
    assert problem is not None and problem.startswith("args['zz'][0]: integer of more than 4300")


def test_parse_json_turns_parsing_limits_into_typed_errors() -> None:
    assert parse_json('{"n": ' + "9" * 4300 + "}", "ARGS") == {"n": 10**4300 - 1}
    with pytest.raises(InvalidArguments, match="ARGS: integer of more than 4300 digits"):
        parse_json('{"n": ' + "1" * 5000 + "}", "ARGS")
    with pytest.raises(InvalidArguments, match="--metadata: nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "--metadata")
    with pytest.raises(json.JSONDecodeError):  # a syntax error stays the caller's to fix
        parse_json("{nope", "ARGS")


def test_the_module_documents_the_policy() -> None:
    assert "4300" in (json_values.__doc__ or "") and "never lifted" in (json_values.__doc__ or "")
