"""Observation left for after the result (fakeredis node, stand-in pool): a lane task run
by a worker defers the primary's shadow record and the metrics replies to its
``after_return``; called any other way, it runs them before returning."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery

from snakepool.config import load_settings
from snakepool.tasks.worker.lanes import LaneTask, run_lane
from snakepool.tasks.worker.node import Node
from snakepool.tasks.worker.options import SHADOW_HEADER

PAIR = "fedcba9876543210" * 2


class Pong:
    def execute(self, command: str, args: dict[str, Any], **call: Any) -> Any:
        return {"pong": True}

    def commands(self) -> dict[str, dict[str, bool]]:
        return {"ping": {"read_only": True, "idempotent": True}}


@pytest.fixture
def node() -> Node:
    settings = load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}", request_timeout=30)
    node = Node(settings, name="unit@after", lanes=("v3", "v2compat"))
    node.pool = Pong()  # type: ignore[assignment]
    return node


def primary(*, called_directly: bool) -> SimpleNamespace:
    return SimpleNamespace(
        id=PAIR,
        headers={SHADOW_HEADER: {"role": "primary", "pair": PAIR}},
        called_directly=called_directly,
    )


def stand_in() -> None:
    """The body of a task built on LaneTask (never run here)."""


def shadow_record(node: Node) -> dict[bytes, bytes]:
    return node.redis.hgetall(node.keys.shadow(PAIR))


def test_a_worker_run_records_the_primary_only_after_its_result(node: Node) -> None:
    request = primary(called_directly=False)
    assert run_lane(node, "v3", request, "ping", None, None, {}, after_result_later=True) == {
        "pong": True
    }
    assert shadow_record(node) == {}  # the result is not stored yet: nothing recorded
    app = Celery("after-result", set_as_current=False)
    task = app.task(name="test.lane", base=LaneTask, shared=False)(stand_in)
    task.push_request(snakepool_lane_call=request.snakepool_lane_call)
    try:
        task.after_return("SUCCESS", {"pong": True}, PAIR, (), {}, None)  # as Celery calls it
    finally:
        task.pop_request()
        app.close()
    assert set(shadow_record(node)) == {b"primary"}
    assert node.metrics.summary("v3")["requests"] == 1


def test_a_task_called_directly_runs_everything_before_returning(node: Node) -> None:
    request = primary(called_directly=True)
    run_lane(node, "v3", request, "ping", None, None, {}, after_result_later=True)
    assert set(shadow_record(node)) == {b"primary"}
    assert not hasattr(request, "snakepool_lane_call")


def test_deferred_work_that_fails_is_logged_and_never_raised(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("shadow Redis down")

    monkeypatch.setattr(node.shadows, "record", down)
    node.redis.set(node.keys.lane_metrics("v3"), "not a hash")
    assert run_lane(node, "v3", primary(called_directly=True), "ping", None, None, {}) == {
        "pong": True
    }
    failed = {r.getMessage() for r in caplog.records if r.exc_info}
    assert "lane step RecordShadow.after failed; the request's outcome stands" in failed
    assert "lane step RecordMetrics.after failed; the request's outcome stands" in failed
