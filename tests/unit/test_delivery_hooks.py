"""A node's in-flight record hears of each task's start and end from
``SnakepoolTask.__call__`` (``DeliveryHooks``), on every path, and never changes it."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from celery import Task

from snakepool.config import load_settings
from snakepool.errors import CommandFailed
from snakepool.tasks.worker.app import create_app
from snakepool.tasks.worker.recovery.step import RecoveryService


class _Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def task_started(self, task: Task) -> None:
        self.calls.append(("started", task.name))

    def task_done(self, task: Task) -> None:
        self.calls.append(("done", task.name))


def _app_with(hooks: Any) -> Any:
    app = create_app(load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}"), node=True)
    app.snakepool_delivery_hooks = hooks
    return app


@pytest.mark.parametrize("fails", [False, True])
def test_every_call_is_bracketed_by_started_and_done(fails: bool) -> None:
    hooks = _Hooks()
    app = _app_with(hooks)
    seen: list[tuple[str, str]] = []

    name = f"t.bracketed.{uuid.uuid4().hex}"

    @app.task(name=name)
    def bracketed() -> int:
        seen.extend(hooks.calls)
        if fails:
            raise CommandFailed("the command's own failure")
        return 7

    if fails:
        with pytest.raises(CommandFailed):
            bracketed()
    else:
        assert bracketed() == 7
    assert seen == [("started", name)]  # before the body ran
    assert hooks.calls == [("started", name), ("done", name)]


class _BrokenRecord:
    def started(self, tag: str) -> None:
        raise RuntimeError("the record broke")

    finished = started


def test_the_recovery_hooks_never_raise_into_the_task(caplog: pytest.LogCaptureFixture) -> None:
    service = object.__new__(RecoveryService)  # only its record is used here
    service.record = _BrokenRecord()  # type: ignore[assignment]
    app = _app_with(service)

    @app.task(name=f"t.recorded.{uuid.uuid4().hex}", bind=True)
    def recorded(self: Task) -> str:
        return "ran"

    request = {"id": uuid.uuid4().hex, "delivery_info": {}, "properties": {"delivery_tag": "7"}}
    recorded.push_request(**request)
    try:
        with caplog.at_level(logging.ERROR, logger="snakepool.recovery"):
            assert recorded.run() == "ran" and recorded() == "ran"
    finally:
        recorded.pop_request()
    assert "recording a task as started failed" in caplog.text
    assert "recording a task as done failed" in caplog.text
