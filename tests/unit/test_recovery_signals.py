"""The recovery bootstep's signal handlers find the delivery tag Celery gives them."""

from __future__ import annotations

from types import SimpleNamespace

from celery.app.task import Context

from snakepool.tasks.worker.recovery.step import RecoveryService


def _service() -> tuple[RecoveryService, list[str]]:
    service = RecoveryService.__new__(RecoveryService)  # no Redis: only the handlers
    done: list[str] = []
    service.record = SimpleNamespace(finished=done.append)  # type: ignore[assignment]
    return service, done


def test_a_revoked_request_is_finished_from_the_context_celery_sends() -> None:
    """``task_revoked`` carries the request's Context (``Request._context``), which has
    no ``message``: the tag is among its properties."""
    service, done = _service()
    context = Context({"id": "t1", "properties": {"delivery_tag": "tag-1"}, "delivery_info": {}})
    service._on_revoked(request=context)
    assert done == ["tag-1"]


def test_a_revoked_request_with_its_message_is_finished_by_that_tag() -> None:
    service, done = _service()
    service._on_revoked(request=SimpleNamespace(message=SimpleNamespace(delivery_tag="tag-2")))
    service._on_revoked(request=SimpleNamespace())  # no tag at all: nothing
    assert done == ["tag-2"]
