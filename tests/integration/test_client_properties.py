"""What callers send, through ``Client.execute`` on a real node (issue 8's properties).

Arbitrary JSON-able arguments come back exactly (``echo``); values only Celery's JSON can
carry (datetime, Decimal, UUID, bytes) give a result or a typed client error; arbitrary
session ids and program definitions end in a result or a typed error. After every
example the node still answers, and its pool accounts for every interpreter.
"""

from __future__ import annotations

import datetime
import decimal
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from snakepool.errors import InvalidArguments, SnakepoolError
from snakepool.tasks.client import Client
from snakepool.tasks.worker.node import live_nodes
from tests.integration.cluster import Cluster, one_node_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROPERTIES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: What a typed refusal of the request itself looks like (never a server error).
CLIENT_ERRORS = ("InvalidArguments", "SessionNotFound", "ProgramNotFound", "PayloadTooLarge")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
broker_values = st.one_of(
    st.datetimes(),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.uuids(),
    st.binary(max_size=20),
)


@pytest.fixture(scope="module")
def client(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    adapter = "snakepool.pool.interpreter.builtin"
    cluster = Cluster(redis_server, tmp_path_factory.mktemp("props"), adapter=adapter, pool_size=1)
    with one_node_client(cluster, "props") as client:
        client.set_rollout(50, "properties on both lanes")
        yield client


def _healthy(client: Client) -> None:
    assert client.execute("ping", timeout=30)["pong"] is True


def _pool_accounts_for_everyone(client: Client) -> None:
    deadline = time.monotonic() + 10
    while True:  # the heartbeat is at most a second old: wait for a quiet one
        (node,) = live_nodes(client.redis, client.keys)
        pool = node["pool"]
        if pool["idle"] == pool["size"] and pool["busy"] == pool["starting"] == 0:
            return
        assert time.monotonic() < deadline, pool
        time.sleep(0.1)


@PROPERTIES
@given(args=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_json_args_come_back_exactly(client: Client, args: dict[str, Any]) -> None:
    assert client.execute("echo", args, timeout=30) == args


@PROPERTIES
@given(value=broker_values)
def test_broker_values_give_a_result_or_a_typed_client_error(client: Client, value: Any) -> None:
    try:
        result = client.execute("echo", {"value": value}, timeout=30)
    except SnakepoolError as exc:
        assert type(exc).__name__ == "InvalidArguments", exc
        assert "value" in exc.message
    else:
        assert result == {"value": value}
    _healthy(client)


@PROPERTIES
@given(session_id=st.text(max_size=140))
def test_any_session_id_is_refused_or_not_found(client: Client, session_id: str) -> None:
    with pytest.raises(SnakepoolError) as raised:
        client.execute("list_programs", session_id=session_id, timeout=30)
    assert type(raised.value).__name__ in ("InvalidArguments", "SessionNotFound")


@PROPERTIES
@given(
    signature=st.text(max_size=60)
    | st.from_regex(r"[a-z_]{1,8}(, ?[a-z_]{1,8})? -> [a-z_]{1,8}", fullmatch=True),
    module=st.sampled_from(["predict", "chain_of_thought", "retrieve", ""]),
)
def test_any_program_definition_is_created_or_refused(
    client: Client, signature: str, module: str
) -> None:
    session = client.create_session(ttl=60)
    args = {"id": "p", "signature": signature, **({"module": module} if module else {})}
    try:
        created = client.execute("create_program", args, session_id=session, timeout=60)
    except SnakepoolError as exc:
        assert type(exc).__name__ in CLIENT_ERRORS, exc
    else:
        assert created["program_id"] == "p"
        inputs = [f.strip().split(":")[0] for f in signature.split("->", maxsplit=1)[0].split(",")]
        out = client.execute(
            "execute_program", {"program_id": "p", "inputs": dict.fromkeys(inputs, "hi")},
            session_id=session, timeout=60,
        )  # fmt: skip
        assert isinstance(out, dict) and out
    _healthy(client)


def _power_of_ten(digits: int) -> int:
    return 10**digits if digits > 0 else -(10**-digits)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


#: Values a hostile caller sends: lone surrogates, NaN and infinities, integers past
#: 4300 digits, nesting past 256 levels, megabytes, non-string keys, tuples, sets, bytes.
hostile_leaves = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),  # surrogates too
    st.floats(),  # NaN, inf, -0.0
    st.sampled_from([4299, -4300, 5000, 19]).map(_power_of_ten),  # of that many digits
    st.binary(max_size=20),
    st.sampled_from(["x" * (1 << 20), "\x00\u2028\ufeff", "y" * (17 << 20)]),
)
hostile_values = st.recursive(
    hostile_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=5) | st.integers() | st.booleans(), inner, max_size=4)
        | st.integers(1, 400).map(_nested)
    ),
    max_leaves=8,
)


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


@PROPERTIES
@given(args=st.dictionaries(st.text(max_size=5), hostile_values, max_size=3))
def test_hostile_args_give_their_value_or_a_typed_client_error_and_leave_the_pool_whole(
    client: Client, args: dict[str, Any]
) -> None:
    try:
        result = client.execute("echo", args, timeout=60)
    except SnakepoolError as exc:
        assert type(exc).__name__ in CLIENT_ERRORS, exc  # never a server error
    else:  # what Celery's JSON made of the args, NaN and all
        assert _as_json(result) == _as_json(kombu_loads(kombu_dumps(args)))
    _healthy(client)
    (node,) = live_nodes(client.redis, client.keys)
    pool = node["pool"]
    assert pool["idle"] + pool["busy"] + pool["starting"] == pool["size"], pool


def test_after_all_that_the_pool_accounts_for_every_interpreter(client: Client) -> None:
    # Values that reach the node's pool and are refused there, then the books.
    # kombu's JSON carries these (tagged), so they reach the node: a typed client error
    # naming the value there, never a raw TypeError nor an interpreter left busy.
    for bad in (datetime.date(2026, 11, 30), decimal.Decimal("1.5"), uuid.UUID(int=7)):
        with pytest.raises(InvalidArguments, match=rf"args\['when'\]: {type(bad).__name__} is not"):
            client.execute("echo", {"when": bad}, timeout=30)
    assert client.execute("echo", {"n": 100000000000000000000}, timeout=30) == {
        "n": 100000000000000000000
    }
    assert client.execute("calculate", {"expression": "2**64"}, timeout=30) == {
        "result": 18446744073709551616
    }
    _pool_accounts_for_everyone(client)


def test_two_sessions_on_one_v2compat_interpreter_keep_their_own_programs(
    client: Client,
) -> None:
    """Issue 8.1 on a real node: pool size 1, rollout 0 %, two sessions, one program id."""
    client.wait_for_flags(client.set_rollout(0, "V2-compat only")["version"])
    try:
        a, b = client.create_session(ttl=120), client.create_session(ttl=120)
        qa = {"id": "qa", "signature": "question -> answer"}
        summary = {"id": "qa", "signature": "text -> summary"}
        created = client.execute("create_program", qa, session_id=a, timeout=60)
        assert created["program_id"] == "qa" and created["input_fields"] == ["question"]
        client.execute("create_program", summary, session_id=b, timeout=60)
        run_a = {"program_id": "qa", "inputs": {"question": "2+2?"}}
        assert set(client.execute("execute_program", run_a, session_id=a, timeout=60)) == {"answer"}
        run_b = {"program_id": "qa", "inputs": {"text": "a long text"}}
        assert set(client.execute("execute_program", run_b, session_id=b, timeout=60)) == {
            "summary"
        }
        client.execute("delete_program", {"program_id": "qa"}, session_id=b, timeout=60)
        assert set(client.execute("execute_program", run_a, session_id=a, timeout=60)) == {"answer"}
        with pytest.raises(SnakepoolError) as gone:
            client.execute("execute_program", run_b, session_id=b, timeout=60)
        assert type(gone.value).__name__ == "ProgramNotFound"
        on_lane = client.submit("execute_program", run_a, session_id=a)
        assert set(on_lane.get(timeout=60)) == {"answer"} and on_lane.queue == "v2compat"
    finally:
        client.wait_for_flags(client.set_rollout(50, "back to both lanes")["version"])
