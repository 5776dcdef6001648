"""On a real node: a message it cannot read is answered, never lost (review item 2), and
integers are exact up to 4300 digits through the lanes, a typed error past (item 3).

Before, the node dropped such messages storing nothing, and ``AsyncResult.get()`` never
returned. Now ``InvalidArguments`` is stored under the task id from the message's
headers — when that id is valid, has no result yet, and a result is wanted. One node
serving the router and both lanes, one interpreter, for the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.flags import RolloutFlags
from snakepool.errors import CommandFailed, InvalidArguments
from snakepool.tasks.client import Client
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from tests.integration.cluster import Cluster, one_node_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

LARGEST = 10**4300 - 1
#: Task → the queue it is sent to (and the lane its stored failure names).
DESTINATIONS = {
    "v3": (LANE_TASKS["v3"], "v3"),
    "v2compat": (LANE_TASKS["v2compat"], "v2compat"),
    "router": (ROUTE_TASK, ROUTER_QUEUE),
}


@pytest.fixture(scope="module")
def client(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    workdir = tmp_path_factory.mktemp("unreadable")
    cluster = Cluster(redis_server, workdir, adapter="tests.adapters.results", pool_size=1)
    with one_node_client(cluster, "unreadable") as client:
        yield client


def _route_everything_to(client: Client, lane: str) -> None:
    flags = RolloutFlags(percent=100 if lane == "v3" else 0)
    client.wait_for_flags(client.flags.update(lambda _: flags, who="t", why="t").version)


def send_raw(
    app: Celery,
    where: str,
    body: bytes,
    *,
    task_id: str,
    content_type: str = "application/json",
    task_name: Any = None,
    drop_id: bool = False,
) -> None:
    """Publish ``body`` as it is (no serializer), with the headers Celery would send."""
    task, queue = DESTINATIONS[where]
    message = app.amqp.as_task_v2(task_id, task, args=("echo", {}, None), kwargs={})
    if task_name is not None:
        message.headers["task"] = task_name
    if drop_id:  # a message with a task name but no id stopped the node
        del message.headers["id"]
    with app.producer_or_acquire() as producer:
        producer.publish(
            body, exchange="", routing_key=queue, headers=message.headers,
            content_type=content_type, content_encoding="utf-8", **message.properties,
        )  # fmt: skip


def _json_body(args_json: bytes) -> bytes:
    return b'[["echo", ' + args_json + b", null], {}, {}]"


#: Bodies the node cannot decode: each was dropped with nothing stored.
UNDECODABLE = {
    "int-5000-digits": (_json_body(b'{"n": ' + b"7" * 5000 + b"}"), "more than 4300 digits"),
    "nested-100000": (_json_body(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    "not-utf8": (_json_body(b'{"s": "\xff"}'), "UnicodeDecodeError"),
}


@pytest.mark.parametrize("where", ["v3", "v2compat", "router"])
@pytest.mark.parametrize("kind", sorted(UNDECODABLE))
def test_an_undecodable_message_gets_invalid_arguments_under_its_task_id(
    client: Client, where: str, kind: str
) -> None:
    body, reason = UNDECODABLE[kind]
    task_id = uuid.uuid4().hex
    send_raw(client.app, where, body, task_id=task_id)
    result = AsyncResult(task_id, app=client.app)
    with pytest.raises(InvalidArguments, match=f"could not be read: .*{reason}"):
        result.get(timeout=30)
    assert result.queue == DESTINATIONS[where][1]  # the lane, as for any result
    assert client.execute("echo", {"after": kind}, timeout=30) == {"after": kind}


@pytest.mark.parametrize("where", ["v3", "v2compat", "router"])
@pytest.mark.parametrize("serializer", ["pickle", "msgpack"])
def test_content_that_is_not_json_gets_invalid_arguments(
    client: Client, where: str, serializer: str
) -> None:
    task, queue = DESTINATIONS[where]
    sent = client.app.send_task(
        task, args=("echo", {"a": 1}, None), queue=queue, serializer=serializer
    )
    with pytest.raises(InvalidArguments, match=r"untrusted content .*JSON messages only"):
        sent.get(timeout=30)
    assert client.execute("ping", timeout=30)["pong"] is True


#: JSON bodies of the wrong shape, and a task name that is not a string: each stopped
#: the node ("Unrecoverable error"), and the restored message then stopped the next one.
MALFORMED: dict[str, tuple[bytes, Any]] = {
    "string-body": (b'"hello"', None),
    "two-items": (b'[["echo", {}, null], {}]', None),
    "object-body": (b"{}", None),
    "null-body": (b"null", None),
    "kwargs-a-list": (b'[["echo", {}, null], [], {}]', None),
    "embed-an-int": (b'[["echo", {}, null], {}, 7]', None),
    "args-an-int": (b"[5, {}, {}]", None),
    "task-name-a-list": (_json_body(b"{}"), ["snakepool.v3.execute"]),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_message_gets_invalid_arguments_and_the_node_lives(
    client: Client, kind: str
) -> None:
    body, task_name = MALFORMED[kind]
    task_id = uuid.uuid4().hex
    send_raw(client.app, "v3", body, task_id=task_id, task_name=task_name)
    with pytest.raises(InvalidArguments, match=r"could not be read: its (body|task name)"):
        AsyncResult(task_id, app=client.app).get(timeout=30)
    assert client.execute("echo", {"after": kind}, timeout=30) == {"after": kind}


def _settled_after(client: Client, where: str) -> None:
    """Wait until everything sent to ``where`` before now has been taken (one node, FIFO)."""
    task, queue = DESTINATIONS[where]
    marker = client.app.send_task(task, args=("echo", {"marker": 1}, None), queue=queue)
    assert marker.get(timeout=30) == {"marker": 1}


@pytest.mark.parametrize("task_id", ["abc\n", "a b", "x" * 129, "../../etc", "", None])
def test_a_message_without_a_usable_id_is_dropped_and_nothing_stored(
    client: Client, task_id: str | None
) -> None:
    body = _json_body(b'{"n": ' + b"7" * 5000 + b"}")
    if task_id is None:  # no id header at all (the id still names no key: checked below)
        task_id = uuid.uuid4().hex
        send_raw(client.app, "v3", body, task_id=task_id, drop_id=True)
    else:
        send_raw(client.app, "v3", body, task_id=task_id)
    _settled_after(client, "v3")
    # Never a key built from an id that is not one (it would name any key it likes).
    assert client.redis.exists(f"celery-task-meta-{task_id}") == 0


def test_a_task_id_that_has_a_result_keeps_it(client: Client) -> None:
    task, queue = DESTINATIONS["v3"]
    first = client.app.send_task(task, args=("echo", {"first": 1}, None), queue=queue)
    assert first.get(timeout=30) == {"first": 1}
    client.app.send_task(task, args=("echo", {}, None), queue=queue, serializer="pickle",
                         task_id=first.id)  # fmt: skip
    _settled_after(client, "v3")
    assert AsyncResult(first.id, app=client.app).get(timeout=5) == {"first": 1}


def test_a_message_that_wants_no_result_gets_none(client: Client) -> None:
    task, queue = DESTINATIONS["v3"]
    sent = client.app.send_task(
        task, args=("echo", {}, None), queue=queue, serializer="pickle", ignore_result=True
    )
    _settled_after(client, "v3")
    assert client.app.backend.get_task_meta(sent.id)["status"] == "PENDING"


# ------------------------------------------------------- integers through the lanes


@pytest.mark.parametrize("lane", ["v3", "v2compat"])
def test_integers_of_4300_digits_are_exact_through_a_lane(client: Client, lane: str) -> None:
    _route_everything_to(client, lane)
    args: dict[str, Any] = {"n": LARGEST, "list": [-LARGEST]}
    assert client.execute("echo", args, timeout=30) == args
    assert client.execute("give", {"kind": "most_digits"}, timeout=30) == {
        "n": LARGEST, "m": -LARGEST,
    }  # fmt: skip


@pytest.mark.parametrize("lane", ["v3", "v2compat"])
@pytest.mark.parametrize("kind", ["too_many_digits", "too_many_digits_key"])
def test_a_result_of_more_than_4300_digits_is_command_failed(
    client: Client, lane: str, kind: str
) -> None:
    # It was kombu's EncodeError: the worker could not store it.
    _route_everything_to(client, lane)
    result = client.submit("give", {"kind": kind})
    with pytest.raises(CommandFailed, match="integer of more than 4300 digits"):
        result.get(timeout=30)
    assert result.queue == lane
    assert client.execute("ping", timeout=30)["pong"] is True


def test_args_of_more_than_4300_digits_never_leave_the_client(client: Client) -> None:
    with pytest.raises(InvalidArguments, match=r"args\['n'\]: integer of more than 4300"):
        client.execute("echo", {"n": 10**5000}, timeout=30)


@settings(max_examples=15, deadline=None)
@given(
    digits=st.integers(min_value=4296, max_value=4304),
    tail=st.integers(min_value=0, max_value=10**12),
    negative=st.booleans(),
    where=st.sampled_from(["args", "result"]),
)
def test_any_integer_is_exact_through_a_node_or_a_typed_error(
    client: Client, digits: int, tail: int, negative: bool, where: str
) -> None:
    number = (10 ** (digits - 1) + tail) * (-1 if negative else 1)  # exactly `digits` digits
    if where == "args":
        if digits <= 4300:
            assert client.execute("echo", {"n": [number]}, timeout=30) == {"n": [number]}
        else:
            with pytest.raises(InvalidArguments, match="integer of more than 4300 digits"):
                client.execute("echo", {"n": [number]}, timeout=30)
    else:  # the interpreter makes it: a command's result
        spec = {"kind": "digits", "digits": digits, "tail": tail, "negative": negative}
        if digits <= 4300:
            assert client.execute("give", spec, timeout=30) == {"n": number}
        else:
            with pytest.raises(CommandFailed, match=r"result\['n'\]: integer of more than 4300"):
                client.execute("give", spec, timeout=30)


# --------------------------------------- items pushed by hand onto a lane's list

_KOMBU_PROPS = '"delivery_info": {"exchange": "", "routing_key": "v3"}'
#: JSON a node's reliable pop takes off a lane's list but kombu cannot make a message
#: of: each stopped the node ("Unrecoverable error"), the item left on its processing
#: list; the sweep put the kombu-looking ones back, to stop the next node.
NOT_KOMBU = {
    "a-list": b"[1, 2]",
    "nested-100000": b"[" * 100_000 + b"]" * 100_000,  # RecursionError
    "an-object": b'{"a": 1}',
    "a-number": b"123",
    "properties-an-int": b'{"properties": 5}',
    "no-delivery-tag": b'{"body": "x", "headers": {}, "properties": {'
    + _KOMBU_PROPS.encode()
    + b"}}",
    "delivery-info-null": b'{"body": "eyJ4IjoxfQ==", "headers": {}, "properties": '
    b'{"body_encoding": "base64", "delivery_tag": "t", "delivery_info": null}}',
    "delivery-tag-a-list": b'{"body": "eyJ4IjoxfQ==", "headers": {}, "properties": '
    b'{"body_encoding": "base64", "delivery_tag": ["t"], ' + _KOMBU_PROPS.encode() + b"}}",
}


@pytest.mark.parametrize("kind", sorted(NOT_KOMBU))
def test_an_item_that_is_not_kombus_on_a_lane_list_is_dropped_and_the_node_lives(
    client: Client, kind: str
) -> None:
    client.redis.lpush("v3", NOT_KOMBU[kind])
    _settled_after(client, "v3")  # FIFO: the item was taken first, by the only node
    assert client.execute("echo", {"after": kind}, timeout=30) == {"after": kind}
    processing = client.redis.keys("snakepool:processing:*")
    assert [client.redis.llen(key) for key in processing] == [0] * len(processing)
    assert client.redis.llen("v3") == 0
