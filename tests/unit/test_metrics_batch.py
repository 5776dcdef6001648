"""Batched lane metrics (fakeredis): the same figures as per-request writes, written at
once when a request runs alone, batched while others run, never lost at the end."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool import errors
from snakepool.tasks.rollout import metrics_batch
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics

OUTCOMES: list[BaseException | None] = [
    None,
    errors.CommandFailed("boom"),
    errors.InvalidArguments("bad"),
    RuntimeError("bug"),
]


def pair() -> tuple[BatchedLaneMetrics, LaneMetrics]:
    client = fakeredis.FakeRedis()
    return BatchedLaneMetrics(client, prefix="b:"), LaneMetrics(client, prefix="p:")


def figures(metrics: LaneMetrics, lane: str) -> dict[str, Any]:
    return {**metrics.summary(lane), "window": metrics.window(lane, 60)}


def test_a_request_alone_is_written_before_record_returns() -> None:
    batched, _ = pair()
    batched.begin()
    batched.record("v3", 0.002, None)
    assert batched.summary("v3")["requests"] == 1  # before end(): the caller reads it next
    batched.end()
    assert batched.summary("v3")["requests"] == 1


def test_requests_in_flight_together_are_batched_and_the_last_one_out_writes() -> None:
    batched, _ = pair()
    for _ in range(3):
        batched.begin()
    batched.record("v3", 0.001, None)
    batched.end()
    batched.record("v3", 0.001, errors.CommandFailed("x"))
    batched.end()
    assert batched.summary("v3")["requests"] == 0  # one still running: nothing written yet
    batched.record("v2compat", 0.001, None)  # the last one in flight writes all three
    assert batched.summary("v3")["requests"] == 2 and batched.summary("v3")["errors"] == 1
    assert batched.summary("v2compat")["requests"] == 1
    batched.end()


def test_end_writes_what_a_race_left_behind() -> None:
    batched, _ = pair()
    batched.begin()
    batched.begin()
    batched.record("v3", 0.001, None)  # both still in flight: batched
    batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 0
    batched.end()
    batched.end()  # the last one out finds records left: written
    assert batched.summary("v3")["requests"] == 2


def test_a_busy_node_writes_when_the_batch_is_old_or_long(monkeypatch: pytest.MonkeyPatch) -> None:
    batched, _ = pair()
    for _ in range(2):
        batched.begin()
    monkeypatch.setattr(metrics_batch, "MAX_BATCH", 3)
    for _ in range(3):
        batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 3  # the third filled the batch
    monkeypatch.setattr(metrics_batch, "FLUSH_AFTER_SECONDS", 0.0)
    batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 4  # old enough at once


def test_a_failed_write_raises_in_the_writer_and_drops_only_that_batch() -> None:
    batched, _ = pair()
    batched.client.set(batched.keys.lane_metrics("v3"), "not a hash")
    with pytest.raises(redis.ResponseError):
        batched.record("v3", 0.001, None)
    batched.client.delete(batched.keys.lane_metrics("v3"))
    batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 1


def test_end_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    batched, _ = pair()
    batched.begin()
    batched.begin()
    batched.record("v3", 0.001, None)
    batched.client.set(batched.keys.lane_metrics("v3"), "not a hash")
    batched.end()
    batched.end()
    assert "writing the lane metrics" in caplog.text


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["v3", "v2compat"]),
            st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
            st.sampled_from(range(len(OUTCOMES))),
            st.integers(min_value=1, max_value=4),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_batched_figures_equal_per_request_figures(
    requests: list[tuple[str, float, int, int]],
) -> None:
    """Whatever overlaps, once the node is idle the figures are the per-request ones."""
    batched, plain = pair()
    for lane, seconds, outcome, in_flight in requests:
        for _ in range(in_flight):
            batched.begin()
        batched.record(lane, seconds, OUTCOMES[outcome])
        for _ in range(in_flight):
            batched.end()
        plain.record(lane, seconds, OUTCOMES[outcome])
    for lane in ("v3", "v2compat"):
        got, want = figures(batched, lane), figures(plain, lane)
        for percentile in ("p50_ms", "p95_ms", "p99_ms"):  # the same samples, maybe reordered
            assert got.pop(percentile) == want.pop(percentile)
        assert got == want
