"""``snakepool deadletter list [--json] | show ID | retry ID | purge`` on a real redis-server.

Dead letters are made the way survivors make them (``held.py``: a node takes a
message, dies, and the sweep settles it), then managed through the command line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepool.config.ids import REQUEST_ID
from snakepool.sessions import SessionStore
from snakepool.tasks.cli import main
from tests.integration.held import World, world

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]


@pytest.fixture
def w(redis_url: str) -> Iterator[World]:
    with world(redis_url, threshold=1) as made:
        yield made


def dead_letter(w: World, command: str = "kill_node", node: str = "v3-a@host") -> str:
    task_id = w.send(command, {"n": 1})
    record = w.node(node)
    w.take(record)
    w.wait_dead(record)
    assert w.recovery.sweep().recovered[0].dead_lettered == [task_id]
    return task_id


def run(redis_url: str, *args: str) -> Result:
    return CliRunner(env={"SNAKEPOOL_REDIS_URL": redis_url}).invoke(main, ["deadletter", *args])


def test_list_is_empty_at_first(redis_url: str, w: World) -> None:
    listed = run(redis_url, "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == []
    table = run(redis_url, "list")
    assert table.exit_code == 0 and "dead letters (0)" in table.output


def test_list_show_retry_purge(redis_url: str, w: World) -> None:
    first = dead_letter(w, "kill_node", "v3-a@host")
    # Newest first is by the Redis clock, in whole seconds: make the two a second apart.
    started = w.client.time()[0]
    while w.client.time()[0] <= started:
        time.sleep(0.01)
    second = dead_letter(w, "echo", "v3-b@host")
    listed = run(redis_url, "list", "--json")
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert [x["task_id"] for x in letters] == [second, first]  # newest first
    assert letters[1] | {"at": 0} == {
        "task_id": first, "command": "kill_node", "queue": "v3", "deliveries": 1,
        "nodes": ["v3-a@host"], "at": 0,
    }  # fmt: skip
    assert [x["task_id"] for x in json.loads(run(redis_url, "list", "-n", "1", "--json").output)] \
        == [second]  # fmt: skip
    table = run(redis_url, "list")
    assert (
        table.exit_code == 0 and "dead letters (2)" in table.output and "kill_node" in table.output
    )

    shown = run(redis_url, "show", first)
    assert shown.exit_code == 0, shown.output
    described = json.loads(shown.output)
    assert described["args"] == ["kill_node", {"n": 1}, None] and described["threshold"] == 1
    assert [h["node"] for h in described["history"]] == ["v3-a@host"]
    assert described["message"]["headers"]["id"] == first

    retried = run(redis_url, "retry", first)
    assert retried.exit_code == 0 and f"re-published {first}" in retried.output
    assert [m["headers"]["id"] for m in w.queued("v3")] == [first]
    assert AsyncResult(first, app=w.app).state == "PENDING"
    assert [x["task_id"] for x in json.loads(run(redis_url, "list", "--json").output)] == [second]

    purged = run(redis_url, "purge")
    assert purged.exit_code == 0 and "purged 1 dead letter" in purged.output
    assert json.loads(run(redis_url, "list", "--json").output) == []
    # The caller of the purged one keeps its answer.
    assert AsyncResult(second, app=w.app).state == "FAILURE"


@pytest.mark.parametrize("command", ["show", "retry"])
def test_an_unknown_dead_letter_is_said_so(redis_url: str, w: World, command: str) -> None:
    missing = run(redis_url, command, "no-such-task")
    assert missing.exit_code == 1 and "no dead letter 'no-such-task'" in missing.output


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=140))
def test_a_malformed_task_id_is_refused(redis_url: str, task_id: str) -> None:
    refused = run(redis_url, "show", "--", task_id)  # an id may begin with "-"
    if REQUEST_ID.fullmatch(task_id):
        assert refused.exit_code == 1  # well formed, just not there
    else:
        assert refused.exit_code == 2 and "invalid request id" in refused.output


def test_a_task_id_with_a_final_newline_is_refused(redis_url: str) -> None:
    refused = run(redis_url, "retry", "abc\n")
    assert refused.exit_code == 2 and re.search(r"invalid request id", refused.output)


def test_without_a_redis_broker_it_says_why(redis_url: str) -> None:
    embedded = run("fakeredis://cli-test", "list")
    assert embedded.exit_code == 2
    assert "ConfigError: dead letters live in a Redis broker" in embedded.output


def cli(redis_url: str, columns: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in a terminal ``columns`` wide."""
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SNAKEPOOL_REDIS_URL": redis_url, "COLUMNS": str(columns)},
    )  # fmt: skip


@pytest.mark.parametrize("columns", [80, 60])
def test_ids_print_whole_at_any_width(redis_url: str, w: World, columns: int) -> None:
    """The ids a listing prints are what `deadletter show ID` / `sessions show ID` take:
    never cut to "3f2a…", never folded over two lines."""
    ids = [str(uuid.uuid4()), "poison-" + "x" * 90]  # a request id may be 128 characters
    for task_id in ids:
        assert w.send("kill_node", {"n": 1}, task_id=task_id) == task_id
    dead: list[str] = []
    for name in ("v3-a@host", "v3-b@host"):  # each takes one, dies, and is swept
        record = w.node(name)
        w.take(record)
        w.wait_dead(record)
        dead += w.recovery.sweep().recovered[0].dead_lettered
    assert sorted(dead) == sorted(ids)
    listed = cli(redis_url, columns, "deadletter", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    for task_id in ids:
        assert any(task_id in line for line in lines), f"{task_id} not whole:\n{listed.stdout}"
        shown = cli(redis_url, columns, "deadletter", "show", task_id)
        assert shown.returncode == 0 and json.loads(shown.stdout)["task_id"] == task_id
    assert "…" not in listed.stdout
    assert all(len(line) <= columns for line in lines if not any(i in line for i in ids))

    store = SessionStore(w.client)
    sessions = [store.create(), store.create(session_id="s-" + "y" * 120)]
    listed = cli(redis_url, columns, "sessions", "list")
    assert listed.returncode == 0, listed.stderr
    for session_id in sessions:
        assert any(session_id in line for line in listed.stdout.splitlines()), listed.stdout
    assert "…" not in listed.stdout
