"""Hostile requests through a real node, beyond issue 8's stated inputs (review 8).

Other members of issue 8's kinds, each of which failed before:

- **per-session state** (8.1): a session moved V2-compat → V3 → V2-compat (a rollback)
  ran the program it had replaced or deleted on V3 from its interpreter's old copy; a
  program the store refused (too large) stayed held and ran; requests outside any
  session shared programs with each other;
- **values a message can carry** (8.3): a raw message without a command, or with a
  fourth positional argument, failed with a raw ``TypeError``; a command's result nested
  deeper than Celery's JSON encoder can go came back as a bare ``SnakepoolError`` saying
  Redis refused (``RecursionError``).

One node serving every lane, pool size 1 (so every request shares one interpreter);
after each test the node still answers and its pool accounts for every interpreter.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from snakepool.errors import CommandFailed, InvalidArguments, ProgramNotFound
from snakepool.tasks.client import Client
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, ROUTER_QUEUE
from snakepool.tasks.worker.node import live_nodes
from tests.integration.cluster import Cluster, one_node_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

QA = {"signature": "question -> answer"}
SUMMARY = {"signature": "text -> summary"}
WAIT = 60


@pytest.fixture(scope="module")
def client(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    cluster = Cluster(
        redis_server, tmp_path_factory.mktemp("hostile"), adapter="tests.adapters.hostile",
        pool_size=1,
    )  # fmt: skip
    with one_node_client(cluster, "hostile") as client:
        yield client


@pytest.fixture(autouse=True)
def node_intact(client: Client) -> Iterator[None]:
    """After each test: the node answers and its pool accounts for every interpreter."""
    yield
    assert client.execute("ping", timeout=WAIT)["pong"] is True
    deadline = time.monotonic() + 10
    while True:  # the heartbeat is at most a second old: wait for a quiet one
        (node,) = live_nodes(client.redis, client.keys)
        pool = node["pool"]
        if pool["idle"] + pool["busy"] + pool["starting"] == pool["size"] and pool["busy"] == 0:
            return
        assert time.monotonic() < deadline, pool
        time.sleep(0.1)


def _route_all_to(client: Client, percent: int) -> None:
    client.wait_for_flags(client.set_rollout(percent, f"review 8: {percent} % to V3")["version"])


def _run(client: Client, sid: str | None, program_id: str, **inputs: str) -> Any:
    args = {"program_id": program_id, "inputs": inputs}
    return client.execute("execute_program", args, session_id=sid, timeout=WAIT)


def test_a_rollback_never_runs_what_the_session_replaced_or_deleted_on_v3(
    client: Client,
) -> None:
    sid = client.create_session(ttl=300)
    _route_all_to(client, 0)  # V2-compat: the interpreter holds both programs
    client.execute("create_program", {"id": "qa", **QA}, session_id=sid, timeout=WAIT)
    client.execute("create_program", {"id": "gone", **QA}, session_id=sid, timeout=WAIT)
    assert set(_run(client, sid, "qa", question="warm?")) == {"answer"}
    _route_all_to(client, 100)  # the session moves to V3: the store only
    client.execute("create_program", {"id": "qa", **SUMMARY}, session_id=sid, timeout=WAIT)
    client.execute("delete_program", {"program_id": "gone"}, session_id=sid, timeout=WAIT)
    _route_all_to(client, 0)  # rolled back: the same interpreter, its old copies
    # Before: "missing input field(s) question for 'question -> answer'" (the old one).
    assert set(_run(client, sid, "qa", text="a long text")) == {"summary"}
    info = client.execute("get_program_info", {"program_id": "qa"}, session_id=sid, timeout=WAIT)
    assert info["signature"] == "text -> summary"
    with pytest.raises(ProgramNotFound):  # before: it ran
        _run(client, sid, "gone", question="still there?")
    listed = client.execute("list_programs", session_id=sid, timeout=WAIT)["programs"]
    assert [p["program_id"] for p in listed] == ["qa"]


def test_a_program_the_store_refuses_is_not_left_in_the_interpreter(client: Client) -> None:
    sid = client.create_session(ttl=300)
    _route_all_to(client, 0)
    demos = [{"question": "q" * 10_000, "answer": "a"} for _ in range(40)]  # ~400 KB
    with pytest.raises(InvalidArguments, match="larger than 262144 bytes"):
        client.execute(
            "create_program", {"id": "big", **QA, "demos": demos}, session_id=sid, timeout=WAIT
        )
    with pytest.raises(ProgramNotFound):  # before: it ran, from the interpreter
        _run(client, sid, "big", question="hi")
    with pytest.raises(ProgramNotFound):
        client.execute("get_program_info", {"program_id": "big"}, session_id=sid, timeout=WAIT)
    assert client.execute("list_programs", session_id=sid, timeout=WAIT) == {"programs": []}


@pytest.mark.parametrize("percent", [0, 100], ids=["v2compat", "v3"])
def test_requests_outside_a_session_never_share_programs(client: Client, percent: int) -> None:
    _route_all_to(client, percent)
    program_id = f"anon-{uuid.uuid4().hex[:8]}"
    mine = client.execute("create_program", {"id": program_id, **QA}, timeout=WAIT)
    assert mine["input_fields"] == ["question"]  # validated and compiled ...
    client.execute("create_program", {"id": program_id, **SUMMARY}, timeout=WAIT)
    # ... but kept for nobody: before, on V2-compat, the second caller's replaced the
    # first's ("missing input field(s) text") and its delete deleted the first's.
    with pytest.raises(ProgramNotFound, match="outside a session keeps no programs"):
        _run(client, None, program_id, question="2+2?")
    with pytest.raises(ProgramNotFound):
        client.execute("delete_program", {"program_id": program_id}, timeout=WAIT)
    assert client.execute("list_programs", timeout=WAIT) == {"programs": []}
    inline = {"program": QA, "inputs": {"question": "2+2?"}}
    assert set(client.execute("execute_program", inline, timeout=WAIT)) == {"answer"}


@pytest.mark.parametrize(
    ("task", "queue"),
    [(ROUTE_TASK, ROUTER_QUEUE), *((task, lane) for lane, task in LANE_TASKS.items())],
    ids=["router", "v3", "v2compat"],
)
@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        ([], {}, "missing a required argument: 'command'"),
        (["ping", {}, None, 5], {}, "too many positional arguments"),
        (["ping"], {"command": "echo"}, "multiple values for argument 'command'"),
    ],
    ids=["no-command", "four-positional", "command-twice"],
)
def test_a_raw_message_whose_arguments_do_not_fit_is_invalid_arguments(
    client: Client, task: str, queue: str, args: list[Any], kwargs: dict[str, Any], why: str
) -> None:
    sent = client.app.send_task(task, args=args, kwargs=kwargs, queue=queue)
    with pytest.raises(InvalidArguments, match=why):  # before: a raw TypeError
        sent.get(timeout=WAIT)


@pytest.mark.parametrize("percent", [0, 100], ids=["v2compat", "v3"])
def test_a_result_too_deep_for_json_is_command_failed(client: Client, percent: int) -> None:
    _route_all_to(client, percent)
    # Before: SnakepoolError "Redis or the broker refused: RecursionError(...)".
    with pytest.raises(CommandFailed, match="nested more than 256 levels deep"):
        client.execute("give", {"kind": "deep_for_json"}, timeout=WAIT)
    deepest = client.execute("give", {"kind": "deepest_for_json"}, timeout=WAIT)
    depth = 0
    while isinstance(deepest, list):
        deepest, depth = deepest[0] if deepest else None, depth + 1
    assert depth == 256


@pytest.mark.parametrize("percent", [0, 100], ids=["v2compat", "v3"])
def test_a_demo_value_plain_json_cannot_store_is_invalid_arguments(
    client: Client, percent: int
) -> None:
    """Celery's JSON carries bytes; the SessionStore's JSON does not (before: a raw
    TypeError from json.dumps, after the interpreter already held the program)."""
    _route_all_to(client, percent)
    sid = client.create_session(ttl=300)
    demos = [{"question": b"\xff", "answer": "x"}]
    with pytest.raises(InvalidArguments, match=r"program\['demos'\]\[0\]\['question'\]: bytes"):
        client.execute(
            "create_program", {"id": "b", **QA, "demos": demos}, session_id=sid, timeout=WAIT
        )
    with pytest.raises(ProgramNotFound):
        _run(client, sid, "b", question="q")


@pytest.mark.parametrize("percent", [0, 100], ids=["v2compat", "v3"])
def test_delete_program_with_an_inline_program_deletes_the_sessions_one(
    client: Client, percent: int
) -> None:
    """Before: V2-compat answered ``{"deleted": "qa"}`` having dropped only the
    interpreter's copy (the store kept it, so it came back); V3 said ProgramNotFound."""
    _route_all_to(client, percent)
    sid = client.create_session(ttl=300)
    client.execute("create_program", {"id": "qa", **QA}, session_id=sid, timeout=WAIT)
    args = {"program_id": "qa", "program": SUMMARY}
    deleted = client.execute("delete_program", args, session_id=sid, timeout=WAIT)
    assert deleted == {"deleted": "qa"}
    assert client.execute("list_programs", session_id=sid, timeout=WAIT) == {"programs": []}
    with pytest.raises(ProgramNotFound):
        _run(client, sid, "qa", question="gone?")
