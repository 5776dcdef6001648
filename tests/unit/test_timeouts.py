"""Caller timeouts are checked at the door: a finite number of seconds in (0, 86400]."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.timeouts import MAX_TIMEOUT_SECONDS, checked_timeout
from snakepool.errors import InvalidArguments


@pytest.mark.parametrize(
    "value",
    [
        float("inf"),
        float("-inf"),
        float("nan"),
        1e300,
        86400.5,
        10**400,
        -1,
        0,
        0.0,
        -0.0,
        "5",
        "x",
        [1],
        None,
        True,
        False,
        {"s": 1},
        b"5",
    ],
    ids=repr,
)
def test_what_cannot_be_waited_on_is_invalid_arguments(value: Any) -> None:
    with pytest.raises(InvalidArguments, match="timeout must be a number of seconds above 0"):
        checked_timeout(value)


@settings(max_examples=50, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_a_number_is_accepted_exactly_when_finite_and_in_range(value: float) -> None:
    if math.isfinite(value) and 0 < value <= MAX_TIMEOUT_SECONDS:
        assert checked_timeout(value) == float(value)
    else:
        with pytest.raises(InvalidArguments):
            checked_timeout(value)


def test_the_maximum_and_the_name_are_the_callers() -> None:
    assert checked_timeout(5, maximum=10) == 5.0
    with pytest.raises(InvalidArguments, match=r"wait must be .* at most 10, not 11"):
        checked_timeout(11, what="wait", maximum=10)
