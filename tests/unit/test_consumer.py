"""The node's consumer answers a message it cannot read (review item 2), unit level: any
task id that is a full match of REQUEST_ID gets ``InvalidArguments`` stored under it and
the message acked; any other id is never used as a key, and the message is dropped."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from celery import Celery
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads

from snakepool.config.ids import REQUEST_ID
from snakepool.errors import InvalidArguments
from snakepool.tasks.worker.app import LANE_TASKS
from snakepool.tasks.worker.consumer import Consumer, malformed, unreadable_reason


class Message:
    """What the consumer's hooks use of a kombu message."""

    def __init__(self, headers: Any, routing_key: str = "worker1@host.dq2") -> None:
        self.headers = headers
        self.delivery_info = {"routing_key": routing_key}
        self.content_type, self.content_encoding = "application/json", "utf-8"
        self.body = b"[]"
        self.acked = self.rejected = 0

    def ack_log_error(self, *args: Any, **kwargs: Any) -> None:
        self.acked += 1

    def ack(self) -> None:  # Celery's own on_decode_error acks this way
        self.acked += 1

    def reject_log_error(self, *args: Any, **kwargs: Any) -> None:
        self.rejected += 1


def _consumer() -> Consumer:
    app = Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.result_extended = True
    consumer = Consumer.__new__(Consumer)  # the hooks need only these
    consumer.app, consumer.hostname, consumer.event_dispatcher = app, "node@host", None
    consumer.connection_errors = ()
    return consumer


def _decode_error(body: bytes, content_type: str = "application/json") -> Exception:
    try:
        loads(body, content_type, "utf-8", accept=["application/json"])
    except (DecodeError, ContentDisallowed) as exc:
        return exc
    raise AssertionError("decoded")


def test_reasons_name_what_the_sender_can_fix() -> None:
    big = _decode_error(b'{"n": ' + b"1" * 5000 + b"}")
    assert "more than 4300 digits" in unreadable_reason(big)
    assert "nested too deeply" in unreadable_reason(_decode_error(b"[" * 100_000))
    pickled = _decode_error(pickle.dumps(1), "application/x-python-serialize")
    assert "JSON messages only" in unreadable_reason(pickled)
    assert "UnicodeDecodeError" in unreadable_reason(_decode_error(b'"\xff"'))


def test_a_valid_id_gets_invalid_arguments_naming_its_lane_and_is_acked() -> None:
    consumer = _consumer()
    message = Message({"id": "abc-123", "task": LANE_TASKS["v2compat"]})
    consumer.on_decode_error(message, _decode_error(b'{"n": ' + b"1" * 5000 + b"}"))
    meta = consumer.app.backend.get_task_meta("abc-123")
    assert meta["status"] == "FAILURE" and meta["queue"] == "v2compat"  # not the .dq2 queue
    error = consumer.app.backend.exception_to_python(meta["result"])
    assert isinstance(error, InvalidArguments) and "more than 4300 digits" in error.message
    assert (message.acked, message.rejected) == (1, 0)


@settings(max_examples=50, deadline=None)
@given(task_id=st.one_of(st.from_regex(REQUEST_ID, fullmatch=True), st.text(max_size=140)))
def test_only_a_full_match_of_a_request_id_is_ever_stored(task_id: str) -> None:
    consumer = _consumer()
    message = Message({"id": task_id, "task": LANE_TASKS["v3"]})
    exc = _decode_error(pickle.dumps(1), "application/x-python-serialize")
    consumer.on_invalid_task(None, message, exc)
    stored = consumer.app.backend._get_task_meta_for(task_id) if task_id else {}
    if REQUEST_ID.fullmatch(task_id):
        assert stored["status"] == "FAILURE" and (message.acked, message.rejected) == (1, 0)
    else:  # dropped, as Celery does: rejected, nothing under any key
        assert stored.get("status", "PENDING") == "PENDING"
        assert (message.acked, message.rejected) == (0, 1)


@pytest.mark.parametrize("headers", [None, "x", {"task": LANE_TASKS["v3"]}, {"id": 5}])
def test_a_message_with_no_id_is_logged_and_dropped(headers: Any) -> None:
    consumer = _consumer()
    message = Message(headers)
    consumer.on_decode_error(message, _decode_error(b"{"))
    assert (message.acked, message.rejected) == (1, 0)  # Celery's own: logged, acked


def test_a_settled_id_keeps_its_result_and_ignore_result_stores_nothing() -> None:
    consumer = _consumer()
    consumer.app.backend.mark_as_done("done-1", {"kept": True})
    consumer.on_unknown_message(None, Message({"id": "done-1"}))
    assert consumer.app.backend.get_task_meta("done-1")["result"] == {"kept": True}
    quiet = Message({"id": "quiet-1", "task": LANE_TASKS["v3"], "ignore_result": True})
    consumer.on_decode_error(quiet, _decode_error(b"{"))
    assert consumer.app.backend.get_task_meta("quiet-1")["status"] == "PENDING"
    assert quiet.acked == 1


class Decoded(Message):
    """A message whose body decodes to ``payload``."""

    def __init__(self, headers: Any, payload: Any) -> None:
        super().__init__(headers)
        self.payload = payload


@pytest.mark.parametrize(
    ("headers", "payload", "problem"),
    [
        ({"id": "a", "task": "t"}, [["echo"], {}, {}], None),
        ({"id": "a", "task": "t"}, ({"args": []}), None),  # hybrid protocol 1: Celery's
        (None, "anything", None),  # no headers: Celery's on_unknown_message
        ({"id": "a"}, "anything", None),  # no task name: Celery decodes it as protocol 1
        ({"id": "a", "task": ["t"]}, [[], {}, {}], "its task name is not a string"),
        ({"task": "t"}, [[], {}, {}], "it has no task id"),
        ({"id": 7, "task": "t"}, [[], {}, {}], "it has no task id"),
        ({"id": "a", "task": "t"}, "hello", "its body is not [args, kwargs, embed]"),
        ({"id": "a", "task": "t"}, [[], {}], "its body is not [args, kwargs, embed]"),
        ({"id": "a", "task": "t"}, [5, {}, {}], "its body is not [args, kwargs, embed]"),
        ({"id": "a", "task": "t"}, [[], [], {}], "its body is not [args, kwargs, embed]"),
        ({"id": "a", "task": "t"}, [[], {}, None], "its body is not [args, kwargs, embed]"),
    ],
)
def test_shapes_that_would_crash_celerys_consumer_are_named(
    headers: Any, payload: Any, problem: str | None
) -> None:
    found = malformed(Decoded(headers, payload))
    assert found == problem if problem is None else (found or "").startswith(problem)
