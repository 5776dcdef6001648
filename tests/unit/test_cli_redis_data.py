"""What the CLI does with what Redis holds (review finding 10): data of the wrong type and
unreadable flags are one line and an exit code, never a traceback.

In process on fakeredis; ``catch_exceptions=False``, so a traceback fails the test.
"""

from __future__ import annotations

from typing import Any

import pytest

from snakepool.config.flags import FlagStore
from snakepool.sessions import redis_from_url
from tests.unit.test_cli_input import KEYS, embedded, run

__all__ = ["embedded"]  # the fixture, used here by name


def test_a_metrics_key_of_the_wrong_type_is_one_line_and_exit_5(embedded: str) -> None:
    redis_from_url(embedded).set(KEYS.lane_metrics("v3"), "not a hash")
    done = run("status")
    assert done.exit_code == 5, done.output
    assert done.output.startswith("Redis refused a command: WRONGTYPE")
    assert len(done.output.strip().splitlines()) <= 2  # one line (wrapped at most once)


@pytest.mark.parametrize(
    ("corrupt", "commands", "what"),
    [
        (lambda c: c.set(KEYS.node("n@h"), "not json", ex=60), ("status", "report", "call"),
         "JSONDecodeError: Expecting value"),
        (lambda c: c.set(KEYS.node("n@h"), "[1, 2]", ex=60), ("status", "call"), "TypeError"),
        (lambda c: c.hset(KEYS.lane_metrics("v3"), "requests", "many"), ("status", "report"),
         "ValueError: invalid literal for int()"),
    ],
    ids=["heartbeat not JSON", "heartbeat not an object", "counter not a number"],
)  # fmt: skip
def test_data_in_redis_that_cannot_be_read_is_one_line_and_exit_5(
    embedded: str, corrupt: Any, commands: tuple[str, ...], what: str
) -> None:
    corrupt(redis_from_url(embedded))
    for command in commands:
        done = run(*({"call": ("call", "ping")}.get(command, (command,))))
        assert done.exit_code == 5, (command, done.output)
        assert done.output.startswith(f"cannot read what Redis holds: {what}"), done.output
        assert "Traceback" not in done.output


def test_an_audit_entry_that_cannot_be_read_is_left_out_of_history(
    embedded: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_from_url(embedded)
    FlagStore(client).set_percent(10, who="ops", why="first")
    client.xadd(KEYS.audit, {"version": "x", "who": "redis-cli"})
    FlagStore(client).set_percent(20, who="ops", why="second")
    assert [e["why"] for e in FlagStore(client).history(10)] == ["second", "first"]
    assert "cannot be read (ValueError" in caplog.text and "left out" in caplog.text
    done = run("rollout", "history")
    assert done.exit_code == 0 and "first" in done.output and "second" in done.output


def test_unreadable_flags_are_a_config_error_for_call_direct_and_status(embedded: str) -> None:
    client = redis_from_url(embedded)
    FlagStore(client).set_percent(50, who="t", why="t")
    client.set(KEYS.rollout, "{corrupt")
    for args in (("call", "ping", "--direct"), ("status",), ("rollout", "history", "-n", "1")):
        done = run(*args)
        if args[0] == "rollout":  # the audit trail is apart from the flags: still readable
            assert done.exit_code == 0, done.output
            continue
        assert done.exit_code == 2, done.output
        assert done.output.startswith("ConfigError: the rollout flags in Redis key")
    assert run("rollout", "rollback", "--reason", "repair").exit_code == 0
    assert FlagStore(client).read().percent == 0
