"""forward(): the router's hop publishes what ``Task.replace`` would have, under the
caller's task id, and lets the router task return (no ``Ignore``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, Task, signature
from celery.signals import before_task_publish

from snakepool.tasks.worker.forward import SentEvents, forward

CALLBACK = dict(signature("app.on_done", args=(1,)))
ERRBACK = dict(signature("app.on_error", args=(2,)))
#: What a message may carry about the canvas the routed task belongs to.
CANVAS: dict[str, Any] = {
    "callbacks": [CALLBACK],
    "errbacks": [ERRBACK],
    "group": "group-1",
    "group_index": 3,
    "root_id": "root-1",
    "chord": dict(signature("app.body")),
    "replaced_task_nesting": 1,
}


class Replaced(Exception):
    """What our stand-in ``on_replace`` raises with the signature Task.replace built."""


class CapturingReplace(Task):  # type: ignore[misc]
    def on_replace(self, sig: Any) -> None:
        raise Replaced(sig)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("forward-test", broker="memory://", backend="cache+memory://")
    yield app
    app.close()


def router_task(app: Celery, sent: list[dict[str, Any]]) -> Any:
    @app.task(name="test.route", bind=True, base=CapturingReplace, shared=False)  # type: ignore[untyped-decorator]
    def route(self: Any) -> None:
        """Stands in for snakepool.route."""

    def send_task(name: str, **options: Any) -> None:
        sent.append({"name": name, **options})

    app.send_task = send_task  # type: ignore[method-assign]
    return route


def lane(app: Celery) -> Any:
    return app.signature(
        "snakepool.v3.execute", args=("ping", None, None), kwargs={"timeout": 2.0},
        queue="v3", headers={"snakepool_shadow": {"role": "primary", "pair": "p"}},
    )  # fmt: skip


@pytest.mark.parametrize("canvas", [{}, CANVAS], ids=["plain request", "part of a canvas"])
def test_forward_publishes_what_task_replace_would(app: Celery, canvas: dict[str, Any]) -> None:
    sent: list[dict[str, Any]] = []
    route = router_task(app, sent)
    route.push_request(id="caller-task-id", **canvas)
    try:
        with pytest.raises(Replaced) as replaced:
            route.replace(lane(app))
        forward(route, lane(app))
    finally:
        route.pop_request()
    expected = replaced.value.args[0]
    [message] = sent
    assert message["name"] == expected.task == "snakepool.v3.execute"
    assert message["args"] == expected.args and message["kwargs"] == expected.kwargs
    assert message["task_id"] == expected.options["task_id"] == "caller-task-id"
    assert message["queue"] == "v3" and message["headers"] == expected.options["headers"]
    for option in ("group_id", "group_index", "root_id", "chord", "replaced_task_nesting"):
        assert message.get(option) == expected.options.get(option), option
    assert [dict(s) for s in message.get("link", [])] == [
        dict(s) for s in expected.options.get("link", [])
    ]
    assert [dict(s) for s in message.get("link_error", [])] == [
        dict(s) for s in expected.options.get("link_error", [])
    ]


def test_forward_hands_on_the_rest_of_a_chain(app: Celery) -> None:
    sent: list[dict[str, Any]] = []
    route = router_task(app, sent)
    rest = [dict(signature("app.third")), dict(signature("app.second"))]
    route.push_request(id="caller-task-id", chain=rest)
    try:
        forward(route, lane(app))
    finally:
        route.pop_request()
    assert sent[0]["chain"] == rest  # the lane task continues the chain, in order
    assert sent[0]["replaced_task_nesting"] == 1


def test_forward_raises_when_the_broker_refuses(app: Celery) -> None:
    route = router_task(app, [])

    def refuse(name: str, **options: Any) -> None:
        raise ConnectionError("broker down")

    app.send_task = refuse  # type: ignore[method-assign]
    route.push_request(id="caller-task-id")
    try:
        with pytest.raises(ConnectionError):
            forward(route, lane(app))  # the router task fails with it: its error is stored
    finally:
        route.pop_request()


class FakeConsumer:
    """What forward reads of a worker's consumer: its event dispatcher."""

    def __init__(self, dispatcher: Any) -> None:
        self.event_dispatcher = dispatcher


def dispatcher(app: Celery, **options: Any) -> Any:
    """A worker's event dispatcher as Celery's consumer makes it (with an event loop)."""
    options.setdefault("buffer_group", ["task"])
    return app.events.Dispatcher(app.connection_for_write(), hostname="router@h", **options)


def forward_through_celery(app: Celery, consumer: FakeConsumer) -> list[Any]:
    """forward() through Celery's real send_task, on a node whose consumer is
    ``consumer``; what Celery's own path (the fallback dispatcher) published."""
    fallback = app.events.Dispatcher(enabled=False)
    published: list[Any] = []
    fallback.publish = lambda *a, **k: published.append(a)  # type: ignore[method-assign]
    app.snakepool_sent_events = SentEvents(consumer, fallback)
    app.conf.task_send_sent_event = True
    route = router_task(app, [])
    del app.send_task  # Celery's own
    with app.connection_for_read() as connection:
        queued = connection.default_channel._size("v3")  # the memory transport's: global
        route.push_request(id="caller-task-id")
        try:
            forward(route, lane(app))
        finally:
            route.pop_request()
        assert connection.default_channel._size("v3") == queued + 1  # the message went
    return published


def assert_lane_sent_event(sent: dict[str, Any]) -> None:
    assert (sent["type"], sent["uuid"]) == ("task-sent", "caller-task-id")
    assert (sent["name"], sent["queue"], sent["routing_key"]) == (
        "snakepool.v3.execute",
        "v3",
        "v3",
    )


def test_the_sent_event_joins_the_workers_buffered_task_events(app: Celery) -> None:
    """The lane message's task-sent event waits in the worker's buffer (sent with the
    other task events), not published on its own."""
    events = dispatcher(app)
    assert forward_through_celery(app, FakeConsumer(events)) == []
    [sent] = events._group_buffer["task"]
    assert_lane_sent_event(sent)
    assert sent["hostname"] == "router@h"
    events.close()


def test_a_consumer_restarted_during_the_publish_gets_the_event(app: Celery) -> None:
    """send_task retries across a lost broker connection; the consumer restarts
    meanwhile, disabling its dispatcher: the event goes to the new one, not lost."""
    old, new = dispatcher(app), dispatcher(app)
    consumer = FakeConsumer(old)

    def restart(**_: Any) -> None:
        old.disable()  # what Celery's Events step does to the previous one
        consumer.event_dispatcher = new

    before_task_publish.connect(restart, weak=False)
    try:
        assert forward_through_celery(app, consumer) == []
    finally:
        before_task_publish.disconnect(restart)
    assert old._group_buffer["task"] == []
    [sent] = new._group_buffer["task"]
    assert_lane_sent_event(sent)
    old.close()
    new.close()


@pytest.mark.parametrize(
    "options",
    [{"enabled": False}, {"buffer_group": None}, {"groups": ["worker"]}, None],
    ids=["events off", "no event loop", "task events disabled", "no dispatcher yet"],
)
def test_celery_publishes_the_event_itself_unless_the_worker_would_as_celery_does(
    app: Celery, options: dict[str, Any] | None
) -> None:
    events = None if options is None else dispatcher(app, **options)
    [(event_type, fields, producer)] = forward_through_celery(app, FakeConsumer(events))
    assert event_type == "task-sent" and producer is not None
    assert_lane_sent_event({"type": event_type, **fields})
    if events is not None:
        assert events._group_buffer["task"] == []
        events.close()
