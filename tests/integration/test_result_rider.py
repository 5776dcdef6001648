"""A node's lane figures ride in the transaction that stores a result (``ResultRider``):
on a real redis-server, through Celery's own ``store_result``."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery, states

from snakepool.tasks.rollout import metrics_batch
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def app(node_app: Celery) -> Celery:
    return node_app


def _rider(app: Celery, redis_client: redis.Redis, *, busy: bool) -> BatchedLaneMetrics:
    metrics = BatchedLaneMetrics(redis_client, busy=lambda: busy)
    metrics.with_results, app.snakepool_result_rider = True, metrics  # as the node's bootstep
    return metrics


def _commands(redis_client: redis.Redis) -> dict[str, int]:
    return {k: v["calls"] for k, v in redis_client.info("commandstats").items()}


@pytest.mark.parametrize("busy", [False, True])
def test_the_figures_go_in_the_results_own_transaction(
    app: Celery, redis_client: redis.Redis, busy: bool
) -> None:
    metrics = _rider(app, redis_client, busy=busy)
    figures = LaneMetrics(redis_client)
    metrics.record("v3", 0.012, None)
    assert figures.summary("v3")["requests"] == 0  # nothing sent on its own
    before = _commands(redis_client)
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, {"pong": True}, states.SUCCESS)
    after = _commands(redis_client)
    assert after["cmdstat_exec"] - before.get("cmdstat_exec", 0) == 1  # one MULTI for all
    assert after["cmdstat_hincrby"] - before.get("cmdstat_hincrby", 0) >= 1
    summary = figures.summary("v3")
    assert summary["requests"] == 1 and summary["errors"] == 0
    assert app.AsyncResult(task_id).result == {"pong": True}
    metrics.collect()  # nothing left, nothing refused
    assert figures.summary("v3")["requests"] == 1


def test_a_refused_figure_never_fails_the_result_and_is_raised_by_collect(
    app: Celery, redis_client: redis.Redis
) -> None:
    metrics = _rider(app, redis_client, busy=False)
    redis_client.set(metrics.keys.lane_metrics("v3"), "not a hash")  # every HINCRBY on it fails
    metrics.record("v3", 0.01, None)
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, 42, states.SUCCESS)
    assert app.AsyncResult(task_id).result == 42
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        metrics.collect()
    metrics.collect()  # raised once


@pytest.mark.parametrize("busy", [False, True])
def test_what_no_result_takes_is_sent_at_collect_unless_a_result_is_coming(
    app: Celery, redis_client: redis.Redis, busy: bool
) -> None:
    """A shadow copy stores no result: an idle node sends its figures once it is done;
    a busy one leaves them to the next result stored."""
    metrics = _rider(app, redis_client, busy=busy)
    figures = LaneMetrics(redis_client)
    metrics.record("v2compat", 0.02, None, shadow_copy=True)
    metrics.collect()
    assert figures.summary("v2compat")["requests"] == (0 if busy else 1)
    app.backend.store_result(uuid.uuid4().hex, None, states.SUCCESS)
    assert figures.summary("v2compat")["requests"] == 1


def test_figures_lost_with_a_failed_store_leave_no_window_without_its_ttl(
    app: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's MULTI fails (Redis restarting) after the rider handed over a window's
    EXPIRE; Celery stores the result on a retry. The next figures of that second must
    give the window its TTL again, or the key lives for ever (DESIGN.md §8)."""
    second = 1_800_000_000.0
    metrics = BatchedLaneMetrics(redis_client, busy=lambda: True, clock=lambda: second)
    metrics.with_results, app.snakepool_result_rider = True, metrics
    window = metrics.keys.lane_window("v3", int(second))
    real, failed = redis.client.Pipeline.execute, list[bool]()

    def execute(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        if not failed:
            failed.append(True)
            raise redis.ConnectionError("Redis restarting")
        return real(pipe, raise_on_error=raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    metrics.record("v3", 0.01, None)
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, 1, states.SUCCESS)  # fails once, stored on retry
    assert failed and app.AsyncResult(task_id).result == 1
    metrics.record("v3", 0.01, None)
    app.backend.store_result(uuid.uuid4().hex, 2, states.SUCCESS)
    assert redis_client.hget(window, "requests") == b"1"  # the first figures were lost
    assert redis_client.ttl(window) > 0
    with pytest.raises(redis.ConnectionError):
        metrics.collect()  # which collect says, once
    metrics.collect()


def test_a_result_is_never_out_before_its_figures_taken_by_another_store(
    app: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread A's store took the batch, thread B's figures with it, and is slow to send
    it (a reconnection, a thread switch); B's own store, with nothing left to take,
    must not publish B's result before A's transaction has put B's figures in Redis."""
    monkeypatch.setattr(metrics_batch, "SEND_WAIT_SECONDS", 60.0)  # no time limit here
    metrics = _rider(app, redis_client, busy=True)
    figures = LaneMetrics(redis_client)
    real, a_taken, a_go = redis.client.Pipeline.execute, threading.Event(), threading.Event()

    def execute(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        if threading.current_thread().name == "store-a":
            a_taken.set()
            a_go.wait(10)  # A's transaction is slow to go out
        return real(pipe, raise_on_error=raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    a_id, b_id = uuid.uuid4().hex, uuid.uuid4().hex
    b_recorded = threading.Event()

    def store_a() -> None:
        metrics.record("v3", 0.01, None)
        b_recorded.wait(10)
        app.backend.store_result(a_id, "a", states.SUCCESS)  # takes A's and B's figures

    def store_b() -> None:
        metrics.record("v3", 0.01, None)
        b_recorded.set()
        a_taken.wait(10)
        app.backend.store_result(b_id, "b", states.SUCCESS)  # nothing left to take

    threads = [threading.Thread(target=store_a, name="store-a"),
               threading.Thread(target=store_b, name="store-b")]  # fmt: skip
    for thread in threads:
        thread.start()
    seen_b_before_a = []
    a_taken.wait(10)
    for _ in range(20):  # B's store gets every chance to go first
        time.sleep(0.01)
        seen_b_before_a.append(redis_client.exists(f"celery-task-meta-{b_id}"))
    a_go.set()
    for thread in threads:
        thread.join(10)
    assert not any(seen_b_before_a), "B's result was out before its figures"
    assert figures.summary("v3")["requests"] == 2
    assert app.AsyncResult(b_id).result == "b" and app.AsyncResult(a_id).result == "a"


def test_figures_no_result_takes_go_in_a_transaction_of_their_own(
    app: Celery, redis_client: redis.Redis
) -> None:
    """The side write (a shadow copy's figures): one MULTI/EXEC, so a connection cut
    before the EXEC applies none of it; a refusal inside it is still raised."""
    metrics = _rider(app, redis_client, busy=False)
    before = _commands(redis_client)
    metrics.record("v2compat", 0.02, None, shadow_copy=True)
    metrics.collect()
    after = _commands(redis_client)
    assert after["cmdstat_multi"] - before.get("cmdstat_multi", 0) == 1
    assert after["cmdstat_exec"] - before.get("cmdstat_exec", 0) == 1
    assert LaneMetrics(redis_client).summary("v2compat")["shadow_copies"] == 1
    redis_client.set(metrics.keys.lane_metrics("v2compat"), "not a hash")
    metrics.record("v2compat", 0.02, None, shadow_copy=True)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        metrics.collect()
