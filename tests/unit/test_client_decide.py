"""``Client.decide`` checks what it is given as ``submit`` does: a lane is never chosen for
a command name or session id that ``submit`` would refuse."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.ids import COMMAND_NAME
from snakepool.errors import InvalidArguments
from snakepool.tasks.client import Client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client() -> Client:
    made = Client(redis_url=f"fakeredis://{uuid.uuid4().hex}")
    yield made  # type: ignore[misc]
    made.close()


@pytest.mark.parametrize("command", [None, "", "ping\n", "a b", "x" * 129, 7, b"ping"])
def test_a_bad_command_name_is_refused(client: Client, command: object) -> None:
    with pytest.raises(InvalidArguments):
        client.decide(command)  # type: ignore[arg-type]


@pytest.mark.parametrize("session_id", ["", "abc\n", "a/b", "x" * 129, 5])
def test_a_bad_session_id_is_refused(client: Client, session_id: object) -> None:
    with pytest.raises(InvalidArguments):
        client.decide("ping", None, session_id)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=140))
def test_decide_takes_exactly_the_names_submit_takes(client: Client, command: str) -> None:
    if COMMAND_NAME.fullmatch(command):
        assert client.decide(command, None, "s-1") in ("v3", "v2compat")
    else:
        with pytest.raises(InvalidArguments):
            client.decide(command, None, "s-1")
