"""The operator's commands, in process on fakeredis: sessions create, rollback and set
messages, exclusions; how nodes log client errors; the go/no-go items' logic."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from click.testing import CliRunner, Result

from snakepool import errors
from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.sessions import SessionStore, redis_from_url
from snakepool.tasks.cli import main
from snakepool.tasks.worker.checks import CheckItem, check_consumers, check_versions, run_checks
from snakepool.tasks.worker.logs import CLIENT_ERRORS, QuietTaskLog, label_log_lines
from tests.conftest import free_port


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> str:
    """A private fakeredis for the CLI (and this test) to share; its URL."""
    url = f"fakeredis://{uuid.uuid4().hex}"
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", url)
    monkeypatch.setenv("COLUMNS", "80")
    return url


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ------------------------------------------------------------------ sessions


def test_sessions_create_prints_the_id_alone(embedded: str) -> None:
    done = run("sessions", "create", "--ttl", "60", "--metadata", '{"user": "ada"}')
    assert done.exit_code == 0, done.output
    session_id = done.output.strip()
    session = SessionStore(redis_from_url(embedded)).get(session_id)
    assert session is not None
    assert session["ttl"] == 60 and session["metadata"] == {"user": "ada"}
    default = run("sessions", "create").output.strip()
    assert SessionStore(redis_from_url(embedded)).get(default)["ttl"] == 3600  # type: ignore[index]


@pytest.mark.parametrize("metadata", ["not json", "[1, 2]", '"text"'])
def test_sessions_create_refuses_bad_metadata(embedded: str, metadata: str) -> None:
    done = run("sessions", "create", "--metadata", metadata)
    assert done.exit_code == 2 and "--metadata" in done.output
    assert SessionStore(redis_from_url(embedded)).count() == 0


def test_sessions_create_refuses_a_bad_ttl(embedded: str) -> None:
    done = run("sessions", "create", "--ttl", "0")
    assert done.exit_code == 2 and "Invalid value for '--ttl'" in done.output


# ------------------------------------------------------------------- rollout


def test_rollback_says_it_paused_and_a_later_set_says_it_still_is(embedded: str) -> None:
    assert run("rollout", "set", "50", "--reason", "half").output.count("paused") == 0
    rolled = run("rollout", "rollback", "--reason", "p99 doubled")
    assert rolled.exit_code == 0
    text = " ".join(rolled.output.split())
    assert "paused the rollout" in text and "snakepool rollout resume" in text
    again = " ".join(run("rollout", "set", "10", "--reason", "retry").output.split())
    assert "10% to V3" in again and "still paused" in again and "rollout resume" in again
    assert "still paused" in " ".join(run("rollout", "step", "--reason", "x").output.split())
    run("rollout", "resume", "--reason", "looked")
    assert "paused" not in run("rollout", "set", "20", "--reason", "x").output


def test_exclude_include_only_from_the_cli(embedded: str) -> None:
    flags = FlagStore(redis_from_url(embedded))
    done = run("rollout", "exclude", "calculate", "--reason", "wrong on V3")
    assert done.exit_code == 0 and flags.read().excluded_commands == ("calculate",)
    assert "already excluded" in run("rollout", "exclude", "calculate", "--reason", "x").output
    assert run("rollout", "only", "ping", "echo", "--reason", "reads first").exit_code == 0
    assert flags.read().v3_commands == ("echo", "ping")
    assert run("rollout", "only", "--reason", "x").exit_code == 2  # neither commands nor --all
    assert run("rollout", "only", "--all", "--reason", "all").exit_code == 0
    assert run("rollout", "include", "calculate", "--reason", "fixed").exit_code == 0
    assert flags.read().excluded_commands == () and flags.read().v3_commands is None
    history = run("rollout", "history", "--json")
    assert [e["why"] for e in json.loads(history.output)][:2] == ["fixed", "all"]
    bad = run("rollout", "exclude", "calc\nulate", "--reason", "x")
    assert bad.exit_code == 2 and "invalid command name" in bad.output


def test_finalize_refuses_from_the_cli_with_every_reason(embedded: str) -> None:
    FlagStore(redis_from_url(embedded)).set_paused(True, who="t", why="t")
    done = run("rollout", "finalize", "--reason", "the end")
    text = " ".join(done.output.split())
    assert done.exit_code == 1, done.output
    assert "cannot finalize" in text and "at 0 %" in text and "paused" in text
    assert FlagStore(redis_from_url(embedded)).read().finalized is False


def test_call_without_any_node_fails_at_once_naming_the_lane(embedded: str) -> None:
    done = run("call", "ping")
    text = " ".join(done.output.split())
    assert done.exit_code == 2
    assert "no live node serves router, v2compat" in text and "nothing was sent" in text
    direct = run("call", "ping", "--direct")
    assert "no live node serves v2compat," in " ".join(direct.output.split())


# ---------------------------------------------------------------------- logs


def test_client_errors_are_the_tasks_expected_errors() -> None:
    import snakepool.tasks.worker.lanes as lanes
    import snakepool.tasks.worker.router as router

    client = {c for c in vars(errors).values() if isinstance(c, type)
              and issubclass(c, errors.SnakepoolError) and c.category == "client"}  # fmt: skip
    assert set(CLIENT_ERRORS) == client
    assert {"InvalidArguments", "UnknownCommand", "SessionNotFound"} <= {c.__name__ for c in client}
    assert errors.CommandFailed not in CLIENT_ERRORS
    for task in (lanes.v3_execute, lanes.v2compat_execute, router.route):
        assert tuple(task.throws) == CLIENT_ERRORS


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, msg, None, None)


def test_quiet_mode_drops_routine_task_lines_only() -> None:
    from celery.app import trace

    quiet = QuietTaskLog()
    assert not quiet.filter(_record(logging.INFO, trace.LOG_SUCCESS))
    assert not quiet.filter(_record(logging.INFO, trace.LOG_RECEIVED))
    assert not quiet.filter(_record(logging.INFO, trace.LOG_IGNORED))
    assert quiet.filter(_record(logging.INFO, trace.LOG_FAILURE))  # a client error's line
    assert quiet.filter(_record(logging.ERROR, trace.LOG_FAILURE))
    assert not quiet.filter(_record(logging.INFO, "Connected to %s"))
    assert quiet.filter(_record(logging.INFO, "node v3-1@h serving v3"))
    assert quiet.filter(_record(logging.WARNING, "Connected to %s"))  # only routine INFO


def test_every_line_a_node_logs_names_the_node() -> None:
    """`up` shows every node's log in one stream: "heartbeat failed: …" from which node?"""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        label_log_lines("v3-1%s")  # a '%' in a name must not break the format
        logging.getLogger("snakepool.node").warning(
            "heartbeat failed: %s", "Error 111 connecting to redis://:hunter2@db:6379/0"
        )
    finally:
        root.removeHandler(handler)
    line = stream.getvalue()
    assert " WARNING v3-1%s snakepool.node: heartbeat failed: Error 111" in line, line
    assert "hunter2" not in line  # still redacted


# -------------------------------------------------------------------- checks


def _node(name: str, version: str | None = "1.0", lanes: tuple[str, ...] = ("v3",)) -> dict:
    return {"name": name, "lanes": list(lanes), "version": version}


def test_consumers_are_proven_by_live_nodes_answering() -> None:
    consumers = {"r@h": ["router"], "v3@h": ["v3", "v3@h.dq2"], "ghost@h": ["v2compat"]}
    items = check_consumers(consumers, [_node("r@h"), _node("v3@h")], RolloutFlags())
    assert [(i.name, i.ok) for i in items] == [("router", True), ("v3", True), ("v2compat", False)]
    assert "no live consumer on v2compat" in items[2].detail and "ghost@h" in items[2].detail
    finalized = check_consumers(
        consumers, [_node("r@h"), _node("v3@h")], RolloutFlags(finalized=True)
    )
    assert finalized[2] == CheckItem("v2compat", True, "not needed: the rollout is finalized")


def test_versions_must_agree() -> None:
    both = {"a@h", "b@h"}
    assert check_versions([_node("a@h"), _node("b@h")], answering=both).ok
    mixed = check_versions([_node("a@h"), _node("b@h", "0.9")], answering=both)
    assert not mixed.ok and "0.9: b@h" in mixed.detail and "1.0: a@h" in mixed.detail
    assert not check_versions([_node("a@h", None)], answering=both).ok  # too old to say
    assert not check_versions([], answering=both).ok


def test_versions_count_only_nodes_that_answer_and_name_the_frozen_apart() -> None:
    frozen = {**_node("frozen@h", "0.9"), "at": 100.0}  # heartbeat not yet expired
    item = check_versions([_node("a@h"), frozen], answering={"a@h"}, now=102.5)
    assert item.ok, item.detail  # the frozen node's version is not a live node's
    assert item.detail.startswith("1 node(s) on 1.0")
    assert "not counted" in item.detail and "frozen@h (heartbeat 2.5s old)" in item.detail
    alone = check_versions([frozen], answering=set(), now=101.0)
    assert not alone.ok and alone.detail.startswith("no live nodes")
    assert "frozen@h (heartbeat 1.0s old)" in alone.detail


def test_invalid_settings_fail_the_check_and_stop_the_rest() -> None:
    def load() -> None:
        raise errors.ConfigError("invalid settings: SNAKEPOOL_POOL_SIZE: too big")

    items = run_checks(load)  # type: ignore[arg-type]
    assert items[0] == CheckItem(
        "settings", False, "invalid settings: SNAKEPOOL_POOL_SIZE: too big"
    )
    assert [i.name for i in items[1:]] == [
        "redis", "flags", "adapter", "router", "v3", "v2compat", "versions",
    ]  # fmt: skip
    assert all(not i.ok and "not checked" in i.detail for i in items[1:])


def test_unreachable_redis_fails_the_check_naming_it() -> None:
    from snakepool.config import load_settings

    url = f"redis://127.0.0.1:{free_port()}/0"
    items = {i.name: i for i in run_checks(lambda: load_settings(redis_url=url))}
    assert items["settings"].ok and items["adapter"].ok  # the adapter is checked anyway
    assert not items["redis"].ok and url in items["redis"].detail
    assert all(not items[n].ok for n in ("flags", "router", "v3", "v2compat", "versions"))


@pytest.mark.parametrize(("quiet", "flag"), [(True, ["--quiet"]), (False, [])])
def test_up_starts_quiet_nodes_unless_verbose(
    quiet: bool, flag: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from snakepool.tasks.local.launcher import Launcher

    started: list[list[str]] = []

    def spawn(role: str, name: str, argv: list[str]) -> SimpleNamespace:
        started.append(argv)
        return SimpleNamespace()

    launcher = Launcher({})
    monkeypatch.setattr(launcher, "_spawn", spawn)
    launcher.start_node("v3", "v3-1", pool_size=1, quiet=quiet)
    assert started[0][-len(flag) - 2 :] == ["--pool-size", "1", *flag]


@pytest.mark.parametrize(
    "args",
    [
        ("rollout", "set", "5", "--reason", ""),
        ("rollout", "rollback", "--reason", "   "),
        ("rollout", "exclude", "echo", "--reason", "\t"),
        ("rollout", "finalize", "--reason", " "),
    ],
)
def test_a_blank_reason_is_a_usage_error_and_changes_nothing(
    embedded: str, args: tuple[str, ...]
) -> None:
    before = run("rollout", "history", "--json")
    done = run(*args)
    assert done.exit_code == 2 and "say why" in done.output
    assert run("rollout", "history", "--json").output == before.output
