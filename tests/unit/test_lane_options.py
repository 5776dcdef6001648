"""What callers may send besides command and args: only ``timeout``; the shadow tag is ours.

Property-based: whatever option names and values a caller sends, and whatever a message
header holds, nothing unvalidated becomes an internal switch or part of a Redis key.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.keys import SESSION_ID
from snakepool.errors import InvalidArguments
from snakepool.tasks.rollout.shadow import PAIR_ID, ShadowRecorder, is_pair_id
from snakepool.tasks.worker.options import (
    MAX_TIMEOUT_SECONDS,
    SHADOW_HEADER,
    LaneOptions,
    ShadowTag,
    checked_session_id,
    shadow_task_id,
)

SMALL = settings(max_examples=40, deadline=None)
PAIR = "ab" * 16
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@SMALL
@given(name=st.text(min_size=1, max_size=30).filter(lambda n: n != "timeout"), value=json_values)
def test_every_option_but_timeout_is_invalid_arguments(name: str, value: Any) -> None:
    with pytest.raises(InvalidArguments, match="unknown option"):
        LaneOptions.parse({name: value})
    with pytest.raises(InvalidArguments, match="unknown option"):
        LaneOptions.parse({"timeout": 1, name: value})


@SMALL
@given(timeout=st.floats(min_value=1e-6, max_value=MAX_TIMEOUT_SECONDS) | st.integers(1, 86400))
def test_a_positive_bounded_timeout_is_accepted_as_seconds(timeout: float) -> None:
    assert LaneOptions.parse({"timeout": timeout}) == LaneOptions(timeout=float(timeout))
    assert LaneOptions.parse({"timeout": timeout}).to_kwargs() == {"timeout": float(timeout)}


@SMALL
@given(
    timeout=st.floats(max_value=0.0)
    | st.floats(min_value=MAX_TIMEOUT_SECONDS, exclude_min=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, True, False, "5", [5], {"s": 5}])
    | st.integers(min_value=2**1024, max_value=10**4299)  # past a float: OverflowError
)
def test_any_other_timeout_is_invalid_arguments(timeout: Any) -> None:
    with pytest.raises(InvalidArguments, match="timeout"):
        LaneOptions.parse({"timeout": timeout})


def test_a_lane_bounds_timeout_by_its_request_timeout() -> None:
    assert LaneOptions.parse({"timeout": 30}, max_timeout=30).timeout == 30.0
    with pytest.raises(InvalidArguments, match="at most 30"):
        LaneOptions.parse({"timeout": 30.5}, max_timeout=30)
    assert LaneOptions.parse({}) == LaneOptions.parse({"timeout": None}) == LaneOptions()


@SMALL
@given(value=json_values | st.from_regex(PAIR_ID, fullmatch=True).map(lambda p: p + "\n"))
def test_pair_ids_are_full_matches_only(value: Any) -> None:
    expected = isinstance(value, str) and len(value) == 32 and set(value) <= set("0123456789abcdef")
    assert is_pair_id(value) is expected


@SMALL
@given(header=json_values, task_id=st.text(max_size=40) | st.just(PAIR))
def test_a_shadow_tag_is_believed_only_when_it_holds_up(header: Any, task_id: str) -> None:
    request = SimpleNamespace(id=task_id, headers={SHADOW_HEADER: header})
    tag = ShadowTag.of(request)  # never raises, whatever the header holds
    if tag is not None:
        assert is_pair_id(tag.pair) and tag.task_id == task_id


@pytest.mark.parametrize(
    ("task_id", "header", "believed"),
    [
        (PAIR, {"role": "primary", "pair": PAIR}, True),
        (shadow_task_id(PAIR), {"role": "shadow", "pair": PAIR}, True),
        (PAIR, {"role": "shadow", "pair": PAIR}, False),  # a shadow copy has its own id
        ("counts", {"role": "primary", "pair": "counts"}, False),
        (PAIR.upper(), {"role": "primary", "pair": PAIR.upper()}, False),
        (PAIR, {"role": "primary", "pair": PAIR, "extra": 1}, True),
        (PAIR, None, False),
    ],
)
def test_shadow_tag_cases(task_id: str, header: Any, believed: bool) -> None:
    headers = None if header is None else {SHADOW_HEADER: header}
    tag = ShadowTag.of(SimpleNamespace(id=task_id, headers=headers))
    assert (tag is not None) is believed


def test_the_recorder_refuses_a_pair_id_that_is_not_ours() -> None:
    import fakeredis

    client = fakeredis.FakeRedis()
    recorder = ShadowRecorder(client, prefix="t:")
    client.hset("t:shadow:counts", "compared", 5)
    for bad in ("counts", "mismatches", PAIR + "\n", "*"):
        with pytest.raises(InvalidArguments):
            recorder.record(bad, "primary", "v3", "ping", {"ok": True, "value": 1})
    with pytest.raises(InvalidArguments):
        recorder.record(PAIR, "owner", "v3", "ping", {"ok": True, "value": 1})
    assert client.hgetall("t:shadow:counts") == {b"compared": b"5"}
    assert client.keys("t:shadow:*") == [b"t:shadow:counts"]


@SMALL
@given(
    session_id=st.text(max_size=140)
    | st.from_regex(SESSION_ID, fullmatch=True).map(lambda s: s + "\n")
    | json_values
)
def test_session_ids_are_checked_as_full_matches(session_id: Any) -> None:
    valid = (
        isinstance(session_id, str)
        and 1 <= len(session_id) <= 128
        and all(c.isascii() and (c.isalnum() or c in "_.:-") for c in session_id)
    )
    if valid:
        assert checked_session_id(session_id) == session_id
    else:
        with pytest.raises(InvalidArguments, match="invalid session id"):
            checked_session_id(session_id)


def test_a_final_newline_is_not_part_of_a_valid_session_id() -> None:
    assert checked_session_id("session-1") == "session-1"
    with pytest.raises(InvalidArguments):
        checked_session_id("session-1\n")
