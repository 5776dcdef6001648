"""Command names are ``COMMAND_NAME`` (config/ids.py), all of it, wherever a request
enters: the client refuses before sending, a lane before anything runs (review finding
1: a 60 000-character name used to reach the node's logs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import load_settings
from snakepool.config.ids import COMMAND_NAME
from snakepool.errors import InvalidArguments, UnknownCommand
from snakepool.tasks.client import Client
from snakepool.tasks.worker.lanes import run_lane
from snakepool.tasks.worker.node import Node
from tests.unit.test_lane_pipeline import StandInPool, answer

BAD_NAMES = [
    "x" * 60_000,  # the review's: fast UnknownCommand, then a 16 s stall redacting its logs
    "x" * 129,
    "",
    "a b",
    "ping\n",  # $ would let a final newline through; fullmatch does not
    "p\u0430ng",  # a Cyrillic a
    "[/]",
    None,
    5,
]


@pytest.fixture
def node() -> Node:
    settings = load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}", request_timeout=30)
    node = Node(settings, name="unit@test", lanes=("v3", "v2compat"))
    node.pool = StandInPool(answer)  # type: ignore[assignment]
    return node


@pytest.fixture
def client() -> Iterator[tuple[Client, list[Any]]]:
    url = f"fakeredis://{uuid.uuid4().hex}"
    made = Client(settings=load_settings(redis_url=url, broker_url=url))
    sent: list[Any] = []
    made.app.send_task = lambda *args, **kwargs: sent.append((args, kwargs))  # type: ignore[method-assign]
    try:
        yield made, sent
    finally:
        made.close()


def run(node: Node, command: Any, lane: str) -> Any:
    request = SimpleNamespace(id="t-1", headers=None)
    return run_lane(node, lane, request, command, None, None, {})


@pytest.mark.parametrize("lane", ["v3", "v2compat"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_a_lane_refuses_a_bad_command_name_before_anything_runs(
    node: Node, lane: str, name: Any
) -> None:
    with pytest.raises(InvalidArguments) as refused:
        run(node, name, lane)
    assert refused.value.message.startswith("invalid command name ")
    assert len(refused.value.message) < 200  # never the whole name back
    assert node.pool.calls == []  # type: ignore[union-attr]
    assert node.metrics.summary(lane)["client_errors"] == 1


def test_a_lane_runs_a_name_of_128_characters(node: Node) -> None:
    with pytest.raises(UnknownCommand):  # reached the pool, which does not know it
        run(node, "x" * 128, "v3")
    assert [call[0] for call in node.pool.calls] == ["x" * 128]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_the_client_refuses_a_bad_command_name_and_sends_nothing(
    client: tuple[Client, list[Any]], name: Any
) -> None:
    made, sent = client
    with pytest.raises(InvalidArguments, match=r"^invalid command name "):
        made.submit(name)
    with pytest.raises(InvalidArguments, match=r"^invalid command name "):
        made.execute(name, timeout=1)
    assert sent == []


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(max_size=140), st.text(alphabet="ab_.:-9\n ", max_size=130)))
def test_the_client_sends_exactly_the_full_matches(name: str) -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"
    made = Client(settings=load_settings(redis_url=url, broker_url=url))
    sent: list[Any] = []
    made.app.send_task = lambda *args, **kwargs: sent.append(args)  # type: ignore[method-assign]
    try:
        try:
            made.submit(name)
            accepted = True
        except InvalidArguments:
            accepted = False
        assert accepted == (COMMAND_NAME.fullmatch(name) is not None)
        assert len(sent) == int(accepted)
    finally:
        made.close()
