"""An int of more than 4300 digits wherever a caller may pass a number (review 8).

``repr``/``str`` of one raises ``ValueError`` (Python's int/str conversion limit) and
``float()`` of one past 1e308 ``OverflowError``: error messages that quoted the value, or
checks that converted it, replaced the refusal with a raw error. Each is now the typed
refusal, naming the value by its size.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from snakepool import AsyncClient, Pool
from snakepool.config import load_settings
from snakepool.errors import ConfigError, InvalidArguments
from snakepool.tasks.client import Client

HUGE = 10**5000


@pytest.fixture
def client() -> Iterator[Client]:
    url = f"fakeredis://{uuid.uuid4().hex}"
    made = Client(settings=load_settings(redis_url=url, broker_url=url))
    yield made
    made.close()


CALLS: list[tuple[str, Callable[[Client], Any], str]] = [
    ("set_rollout", lambda c: c.set_rollout(HUGE, "r"), "percent must be from 0 to 100"),
    ("set_shadow", lambda c: c.set_shadow(True, HUGE), "shadow rate must be a number"),
    ("wait_for_flags", lambda c: c.wait_for_flags(HUGE, timeout=1), "version must be from 0"),
    ("get_session", lambda c: c.get_session(HUGE), "invalid session id an int of"),
    ("delete_session", lambda c: c.delete_session(HUGE), "invalid session id an int of"),
    ("create_session", lambda c: c.create_session(ttl=HUGE), "ttl must be whole seconds"),
    ("submit timeout", lambda c: c.submit("ping", timeout=HUGE), "option 'timeout' must be"),
    ("submit session", lambda c: c.submit("ping", session_id=HUGE), "invalid session id an int"),
    ("submit command", lambda c: c.submit(HUGE), "invalid command name an int of"),
    ("execute timeout", lambda c: c.execute("ping", timeout=HUGE), "timeout must be a number"),
]


@pytest.mark.parametrize(("name", "call", "message"), CALLS, ids=[c[0] for c in CALLS])
def test_a_huge_int_is_invalid_arguments(
    client: Client, name: str, call: Callable[[Client], Any], message: str
) -> None:
    with pytest.raises(InvalidArguments, match=message) as caught:
        call(client)
    assert "an int of" in str(caught.value) or name == "create_session"
    assert client.rollout_state()["version"] == 0


def test_a_huge_int_setting_or_thread_count_is_a_typed_refusal() -> None:
    with pytest.raises(ConfigError, match=r"pool_size: .* \(got an int of 16610 bits\)"):
        Pool(size=HUGE)
    with pytest.raises(ConfigError, match=r"REQUEST_TIMEOUT: .* \(got an int of 16610 bits\)"):
        load_settings(request_timeout=HUGE)
    with pytest.raises(InvalidArguments, match="max_threads must be from 1 to 1024, not an int"):
        AsyncClient(max_threads=HUGE)
    with pytest.raises(InvalidArguments, match="not an int of 16610 bits"):
        Pool(size=1, start_method="spawn").execute("ping", timeout=HUGE)
