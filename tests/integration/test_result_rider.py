"""A node's lane figures ride in the transaction that stores a result (``ResultRider``):
on a real redis-server, through Celery's own ``store_result``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, states

from snakepool.config.settings import load_settings
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics
from snakepool.tasks.worker.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = create_app(load_settings(redis_url=redis_url), node=True)
    yield app
    app.close()


def _rider(app: Celery, client: redis.Redis, *, busy: bool) -> BatchedLaneMetrics:
    metrics = BatchedLaneMetrics(client, busy=lambda: busy)
    metrics.with_results, app.snakepool_result_rider = True, metrics  # as the node's bootstep
    return metrics


def _commands(client: redis.Redis) -> dict[str, int]:
    return {k: v["calls"] for k, v in client.info("commandstats").items()}


@pytest.mark.parametrize("busy", [False, True])
def test_the_figures_go_in_the_results_own_transaction(
    app: Celery, client: redis.Redis, busy: bool
) -> None:
    metrics = _rider(app, client, busy=busy)
    figures = LaneMetrics(client)
    metrics.record("v3", 0.012, None)
    assert figures.summary("v3")["requests"] == 0  # nothing sent on its own
    before = _commands(client)
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, {"pong": True}, states.SUCCESS)
    after = _commands(client)
    assert after["cmdstat_exec"] - before.get("cmdstat_exec", 0) == 1  # one MULTI for all
    assert after["cmdstat_hincrby"] - before.get("cmdstat_hincrby", 0) >= 1
    summary = figures.summary("v3")
    assert summary["requests"] == 1 and summary["errors"] == 0
    assert app.AsyncResult(task_id).result == {"pong": True}
    metrics.collect()  # nothing left, nothing refused
    assert figures.summary("v3")["requests"] == 1


def test_a_refused_figure_never_fails_the_result_and_is_raised_by_collect(
    app: Celery, client: redis.Redis
) -> None:
    metrics = _rider(app, client, busy=False)
    client.set(metrics.keys.lane_metrics("v3"), "not a hash")  # every HINCRBY on it fails
    metrics.record("v3", 0.01, None)
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, 42, states.SUCCESS)
    assert app.AsyncResult(task_id).result == 42
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        metrics.collect()
    metrics.collect()  # raised once


@pytest.mark.parametrize("busy", [False, True])
def test_what_no_result_takes_is_sent_at_collect_unless_a_result_is_coming(
    app: Celery, client: redis.Redis, busy: bool
) -> None:
    """A shadow copy stores no result: an idle node sends its figures once it is done;
    a busy one leaves them to the next result stored."""
    metrics = _rider(app, client, busy=busy)
    figures = LaneMetrics(client)
    metrics.record("v2compat", 0.02, None, shadow_copy=True)
    metrics.collect()
    assert figures.summary("v2compat")["requests"] == (0 if busy else 1)
    app.backend.store_result(uuid.uuid4().hex, None, states.SUCCESS)
    assert figures.summary("v2compat")["requests"] == 1


def test_figures_lost_with_a_failed_store_leave_no_window_without_its_ttl(
    app: Celery, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's MULTI fails (Redis restarting) after the rider handed over a window's
    EXPIRE; Celery stores the result on a retry. The next figures of that second must
    give the window its TTL again, or the key lives for ever (DESIGN.md §8)."""
    second = 1_800_000_000.0
    metrics = BatchedLaneMetrics(client, busy=lambda: True, clock=lambda: second)
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
    assert client.hget(window, "requests") == b"1"  # the first figures were lost
    assert client.ttl(window) > 0
    with pytest.raises(redis.ConnectionError):
        metrics.collect()  # which collect says, once
    metrics.collect()
