"""Batched lane metrics (fakeredis): the same figures as per-request writes, written at
once when the node has nothing else to do, batched while it is busy, the tail written
once due."""

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


class Load:
    """Stands in for the worker: whether the node has other requests right now."""

    def __init__(self) -> None:
        self.others = False

    def __call__(self) -> bool:
        return self.others


def pair(load: Load | None = None) -> tuple[BatchedLaneMetrics, LaneMetrics]:
    client = fakeredis.FakeRedis()
    return BatchedLaneMetrics(client, prefix="b:", busy=load), LaneMetrics(client, prefix="p:")


def figures(metrics: LaneMetrics, lane: str) -> dict[str, Any]:
    return {**metrics.summary(lane), "window": metrics.window(lane, 60)}


def test_a_request_alone_is_written_before_record_returns() -> None:
    batched, _ = pair()
    batched.record("v3", 0.002, None)
    assert batched.summary("v3")["requests"] == 1  # the caller reads it next: it is there


def test_requests_on_a_busy_node_are_batched_until_it_is_not() -> None:
    load = Load()
    batched, _ = pair(load)
    load.others = True
    batched.record("v3", 0.001, None)
    batched.record("v3", 0.001, errors.CommandFailed("x"))
    assert batched.summary("v3")["requests"] == 0  # others still running: nothing written
    load.others = False
    batched.record("v2compat", 0.001, None)  # the last one writes all three
    assert batched.summary("v3")["requests"] == 2 and batched.summary("v3")["errors"] == 1
    assert batched.summary("v2compat")["requests"] == 1


def test_the_tail_of_a_burst_is_written_once_due(monkeypatch: pytest.MonkeyPatch) -> None:
    load = Load()
    batched, _ = pair(load)
    load.others = True
    batched.record("v3", 0.001, None)
    batched.flush_if_due()
    assert batched.summary("v3")["requests"] == 0  # not old enough yet
    monkeypatch.setattr(metrics_batch, "FLUSH_AFTER_SECONDS", 0.0)
    batched.flush_if_due()
    assert batched.summary("v3")["requests"] == 1


def test_a_busy_node_writes_when_the_batch_is_old_or_long(monkeypatch: pytest.MonkeyPatch) -> None:
    load = Load()
    batched, _ = pair(load)
    load.others = True
    monkeypatch.setattr(metrics_batch, "MAX_BATCH", 3)
    for _ in range(3):
        batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 3  # the third filled the batch
    batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 3
    monkeypatch.setattr(metrics_batch, "FLUSH_AFTER_SECONDS", 0.0)
    batched.record("v3", 0.001, None)
    assert batched.summary("v3")["requests"] == 5  # old enough at once


def test_a_refused_write_raises_when_its_replies_are_collected() -> None:
    batched, _ = pair()
    batched.client.set(batched.keys.lane_metrics("v3"), "not a hash")
    batched.record("v3", 0.001, None)  # sent: the request does not wait for the replies
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        batched.collect()  # after the result: the lane pipeline logs it there
    batched.client.delete(batched.keys.lane_metrics("v3"))
    batched.record("v3", 0.001, None)
    batched.collect()  # the replies are in step again: nothing left over
    assert batched.summary("v3")["requests"] == 1


def test_an_earlier_refusal_is_raised_by_the_next_send_when_not_collected() -> None:
    batched, _ = pair()
    batched.client.set(batched.keys.lane_metrics("v3"), "not a hash")
    batched.record("v3", 0.001, None)
    batched.client.delete(batched.keys.lane_metrics("v3"))
    with pytest.raises(redis.ResponseError):
        batched.record("v2compat", 0.001, None)  # reads the earlier replies first
    batched.collect()
    assert batched.summary("v2compat")["requests"] == 1  # its own batch was still sent


def test_a_broken_connection_is_dropped_and_the_next_write_reconnects() -> None:
    batched, _ = pair()
    batched.record("v3", 0.001, None)
    batched.collect()
    batched._connection.disconnect()  # as if Redis had closed it
    batched.record("v3", 0.001, None)
    batched.collect()
    assert batched.summary("v3")["requests"] == 2


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["v3", "v2compat"]),
            st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
            st.sampled_from(range(len(OUTCOMES))),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_batched_figures_equal_per_request_figures(
    requests: list[tuple[str, float, int, bool]],
) -> None:
    """However the batching fell, once written the figures are the per-request ones."""
    load = Load()
    batched, plain = pair(load)
    for lane, seconds, outcome, others in requests:
        load.others = others
        batched.record(lane, seconds, OUTCOMES[outcome])
        plain.record(lane, seconds, OUTCOMES[outcome])
    batched.flush()
    windows = batched.client.keys("b:window:*")
    assert windows and all(0 < batched.client.ttl(w) <= 600 for w in windows)  # bounded
    for lane in ("v3", "v2compat"):
        got, want = figures(batched, lane), figures(plain, lane)
        for percentile in ("p50_ms", "p95_ms", "p99_ms"):  # the same samples, maybe reordered
            assert got.pop(percentile) == want.pop(percentile)
        assert got == want


def test_the_latency_set_is_trimmed_every_trim_every_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One ZREMRANGEBYRANK per TRIM_EVERY samples a node adds (and on its first write),
    not per batch; the set never holds more than LATENCY_CAP + TRIM_EVERY samples."""
    monkeypatch.setattr(metrics_batch.lane_metrics, "LATENCY_CAP", 10)
    batched, _ = pair()
    key = batched.keys.lane_latencies("v3")
    for i in range(3 * metrics_batch.TRIM_EVERY):
        batched.record("v3", 0.001 * (i + 1), None)  # written at once: nothing else runs
        assert batched.client.zcard(key) <= 10 + metrics_batch.TRIM_EVERY
    assert batched.client.zcard(key) >= 10
    sent: list[str] = []
    batched.with_results = True  # the batch now waits for a result store to take it
    for _ in range(metrics_batch.TRIM_EVERY):
        batched.record("v3", 0.001, None)
        sent += [c[0] for c in batched.take_commands()]
    assert sent.count("ZADD") == metrics_batch.TRIM_EVERY
    assert sent.count("ZREMRANGEBYRANK") == 1
