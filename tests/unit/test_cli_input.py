"""What the CLI does with what users type and what Redis holds (review findings 6, 10).

- Text from users and from Redis is printed as it is, never read as rich markup or emoji
  codes: ``[/]`` used to crash (a traceback), ``[link=…]`` reached operators' screens,
  and one rollout reason broke ``rollout history`` for 10 000 entries.
- A value the CLI cannot use is a usage error (exit 2) before anything connects: deep
  JSON, a negative or infinite timeout, a node name Celery would choke on.
- Redis data of the wrong type, and unreadable flags: :mod:`tests.unit.test_cli_redis_data`.

In process on fakeredis; ``catch_exceptions=False``, so a traceback fails the test.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from snakepool.config import load_settings
from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.sessions import SessionStore, redis_from_url
from snakepool.tasks.cli import main
from snakepool.tasks.cli._common import console
from snakepool.tasks.cli._params import MAX_INT_DIGITS, json_object, node_name
from snakepool.tasks.cli._params import FiniteFloatRange as Finite
from snakepool.tasks.cli._terminal import neutralised
from snakepool.tasks.client import Client

KEYS = Keys()
#: Markup rich would act on: a closing tag with nothing open (rich raises), a link, an
#: emoji code (":cat:" is also a valid session id).
BROKEN = "[/]"
LINK = "[link=https://evil.example]click[/link]"
EMOJI = ":cat:"
#: Who changed the rollout (``SNAKEPOOL_OPERATOR``): markup and an emoji code too.
OPERATOR = "[i]ops[/i]:dog:"


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private fakeredis for the CLI and this test; a console wide enough that no
    cell is folded (so the text can be looked for whole)."""
    url = f"fakeredis://{uuid.uuid4().hex}"
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", url)
    width = console._width
    console.width = 250
    yield url
    console._width = width


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ------------------------------------------------- user text is never markup


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("call", BROKEN), 2),
        (("call", "ping", "--session", BROKEN), 2),
        (("sessions", "show", BROKEN), 2),
        (("sessions", "delete", BROKEN), 2),
        (("rollout", "override", BROKEN, "v3", "--reason", "x"), 2),
        (("rollout", "exclude", BROKEN, "--reason", "x"), 2),
        (("rollout", "only", "ping", BROKEN, "--reason", "x"), 2),
        (("deadletter", "show", BROKEN), 2),
        (("bench", "--command", BROKEN), 2),
    ],
)
def test_markup_in_an_argument_is_refused_and_printed_as_typed(
    embedded: str, args: tuple[str, ...], code: int
) -> None:
    done = run(*args)
    assert done.exit_code == code, done.output
    assert BROKEN in done.output


def test_emoji_codes_in_a_session_id_print_as_typed(embedded: str) -> None:
    done = run("sessions", "show", EMOJI)
    assert done.exit_code == 1
    assert done.output.strip() == f"no session {EMOJI!r}"
    assert run("sessions", "delete", EMOJI).output.strip() == f"no session {EMOJI!r}"


@pytest.mark.parametrize("reason", [BROKEN, LINK, f"{EMOJI} [bold]not bold[/bold]"])
def test_a_reason_from_the_cli_or_the_client_never_breaks_history_or_report(
    embedded: str, monkeypatch: pytest.MonkeyPatch, reason: str
) -> None:
    monkeypatch.setenv("SNAKEPOOL_OPERATOR", OPERATOR)
    assert run("rollout", "pause", "--reason", reason).exit_code == 0
    client = Client(settings=load_settings(redis_url=embedded, broker_url=embedded))
    try:
        client.set_rollout(10, reason)  # from application code
        client.rollback(reason)
    finally:
        client.close()
    history = run("rollout", "history")
    assert history.exit_code == 0, history.output
    assert history.output.count(reason) == 3
    assert history.output.count(OPERATOR) == 3
    report = run("report")
    assert report.exit_code == 0, report.output
    assert reason in report.output and OPERATOR in report.output


def test_status_prints_node_text_from_redis_as_it_is(embedded: str) -> None:
    heartbeat = {
        "name": f"{BROKEN}@h", "lanes": ["v3"], "flags_version": 0, "open_breakers": ["v3"],
        "pool": {"size": 1, "idle": 0, "busy": 0, "unavailable": f"{LINK} gone"},
    }  # fmt: skip
    redis_from_url(embedded).set(KEYS.node("n@h"), json.dumps(heartbeat), ex=60)
    done = run("status")
    assert done.exit_code == 0, done.output
    assert f"{BROKEN}@h pool unavailable: {LINK} gone" in done.output
    assert f"{BROKEN}@h sheds v3 (circuit breaker open)" in done.output


# ------------------------------------------- no control character reaches a terminal

#: What would drive a terminal: clear the screen, retitle the window (OSC … BEL), a C1
#: CSI, a NUL.
TERMINAL_CODES = ["\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\x00"]
#: Raw control characters in printed output (newline and tab are layout).
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.mark.parametrize("code", [*TERMINAL_CODES, "\n", "\r"])
@pytest.mark.parametrize(
    "command",
    [
        ("rollout", "set", "5"),
        ("rollout", "rollback"),
        ("rollout", "exclude", "echo"),
        ("rollout", "only", "ping"),
        ("rollout", "finalize"),
    ],
)
def test_control_characters_in_a_reason_are_usage_errors(
    embedded: str, command: tuple[str, ...], code: str
) -> None:
    before = run("rollout", "history", "--json").output
    done = run(*command, "--reason", f"looks good{code}")
    assert done.exit_code == 2, done.output
    assert "Invalid value for '--reason'" in done.output and "control characters" in done.output
    assert not RAW_CONTROL.search(done.output.replace("\n", ""))
    assert run("rollout", "history", "--json").output == before  # nothing changed


def test_a_tab_in_a_reason_is_taken(embedded: str) -> None:
    assert run("rollout", "set", "5", "--reason", "step\tone").exit_code == 0


@pytest.mark.parametrize("code", TERMINAL_CODES)
@pytest.mark.parametrize("where", ["key", "value", "nested"])
def test_control_characters_in_session_metadata_are_usage_errors(
    embedded: str, code: str, where: str
) -> None:
    text = f"user{code}"
    metadata = {"key": {text: 1}, "value": {"u": text}, "nested": {"l": [{"u": text}]}}[where]
    done = run("sessions", "create", "--metadata", json.dumps(metadata))
    assert done.exit_code == 2 and "Invalid value for --metadata" in done.output, done.output
    assert SessionStore(redis_from_url(embedded)).count() == 0


def test_control_characters_in_the_operator_name_are_refused(
    embedded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAKEPOOL_OPERATOR", "ops\x1b[2J")
    done = run("rollout", "set", "5", "--reason", "first step")
    assert done.exit_code == 2 and "SNAKEPOOL_OPERATOR" in done.output, done.output
    assert FlagStore(redis_from_url(embedded), prefix=KEYS.prefix).read().percent == 0


@pytest.mark.parametrize("code", TERMINAL_CODES)
def test_stored_control_characters_are_printed_as_escapes(embedded: str, code: str) -> None:
    """Written by something other than the CLI (application code, a hand-made key): the
    CLI shows them as escapes, never sends them to the terminal."""
    client = redis_from_url(embedded)
    flags = FlagStore(client, prefix=KEYS.prefix)
    flags.update(lambda f: replace(f, percent=10), who=f"app{code}", why=f"step{code}")
    flags.update(lambda f: replace(f, percent=0, paused=True), who="a", why=f"p99{code}")
    session = SessionStore(client).create(metadata={f"k{code}": f"v{code}"})
    heartbeat = {
        "name": f"n{code}@h", "lanes": ["v3"], "flags_version": 0, "open_breakers": [],
        "pool": {"size": 1, "idle": 0, "busy": 0, "unavailable": f"gone{code}"},
    }  # fmt: skip
    client.set(KEYS.node("n@h"), json.dumps(heartbeat), ex=60)
    escaped = f"\\x{ord(code[0]):02x}"
    for args in (
        ("rollout", "history"), ("report",), ("status",), ("sessions", "show", session),
        ("sessions", "list"),
    ):  # fmt: skip
        done = run(*args)
        assert done.exit_code == 0, (args, done.output)
        assert not RAW_CONTROL.search(done.output), (args, done.output)
    history = run("rollout", "history").output
    assert f"step{escaped}" in history and f"app{escaped}" in history
    assert f"gone{escaped}" in run("status").output


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_neutralised_text_holds_no_control_character(text: str) -> None:
    shown = neutralised(text)
    assert not RAW_CONTROL.search(shown)
    assert neutralised(shown) == shown  # printable stays as it is
    if not RAW_CONTROL.search(text):
        assert shown == text


# ------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,  # the review's: a RecursionError traceback
        '{"a": ' + "[" * 300 + "]" * 300 + "}",
        '{"a": ' + "[" * 256 + "]" * 256 + "}",
    ],
    ids=["3000 deep", "301 deep", "257 deep"],
)
@pytest.mark.parametrize(
    "args",
    [("call", "echo", "{}"), ("sessions", "create", "--metadata", "{}"), ("bench", "--args", "{}")],
    ids=["call", "sessions create", "bench"],
)
def test_deep_json_is_a_usage_error_naming_the_limit(
    embedded: str, args: tuple[str, ...], text: str
) -> None:
    done = run(*args[:-1], text)
    assert done.exit_code == 2, done.output
    assert "nested more than 256 levels deep" in done.output
    assert "RecursionError" not in done.output


def test_json_objects_nest_up_to_the_limit() -> None:
    deep: Any = {}
    for _ in range(255):  # the object itself is the first level
        deep = {"d": deep}
    assert json_object(json.dumps(deep), param_hint="ARGS") == deep
    with pytest.raises(click.BadParameter, match="nested more than 256"):
        json_object(json.dumps({"d": deep}), param_hint="ARGS")
    for text, message in (("[1]", "not list"), ('"x"', "not str"), ("{", "not JSON")):
        with pytest.raises(click.BadParameter, match=message):
            json_object(text, param_hint="ARGS")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "not JSON: NaN is not a JSON number"),
        ('{"a": -Infinity}', "not JSON: -Infinity is not a JSON number"),
        ('{"a": 1e999}', "not JSON: 1e999 is beyond a finite number"),
        ('{"a": ' + "9" * (MAX_INT_DIGITS + 1) + "}", f"of {MAX_INT_DIGITS + 1} digits"),
    ],
)
def test_numbers_json_cannot_carry_are_usage_errors(embedded: str, text: str, message: str) -> None:
    for args in (("call", "echo", text), ("sessions", "create", "--metadata", text)):
        done = run(*args)
        assert done.exit_code == 2, done.output
        assert message in done.output


def test_integers_past_pythons_4300_digits_are_read_exactly() -> None:
    text = '{"n": -' + "9" * 5000 + ', "m": 1' + "0" * 4999 + "}"  # int() refuses these
    assert json_object(text, param_hint="ARGS") == {"n": -(10**5000 - 1), "m": 10**4999}


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "1e300", "86401", "soon"])
@pytest.mark.parametrize(
    "args",
    [
        ("call", "ping", "--timeout"),
        ("rollout", "finalize", "--reason", "x", "--timeout"),
        ("check", "--adapter-timeout"),
    ],
    ids=["call", "finalize", "check"],
)
def test_seconds_outside_0_to_a_day_are_usage_errors(
    embedded: str, args: tuple[str, ...], value: str
) -> None:
    done = run(*args, value)
    assert done.exit_code == 2, done.output
    assert "is not a number of seconds above 0 and at most 86400" in done.output


def test_a_timeout_in_range_is_taken(embedded: str) -> None:
    done = run("call", "ping", "--timeout", "2.5")
    assert done.exit_code == 2 and "no live node serves" in done.output  # got past options


@pytest.mark.parametrize(
    "args",
    [
        ("rollout", "history", "-n", "0"),
        ("sessions", "list", "-n", "-1"),
        ("deadletter", "list", "-n", "0"),
        ("report", "--rollbacks", "-1"),
        ("shadow", "show", "--mismatches", "-1"),
        ("up", "--v3", "-1"),
        ("up", "--flower-port", "70000"),
        ("bench", "-n", "0"),
        ("bench", "--concurrency", "0"),
        ("demo", "-n", "0"),
        ("worker", "--lane", "v3", "--loglevel", "LOUD"),
        ("sessions", "list", "-n", "99999999999999999999"),  # past Redis's 64 bits
        ("rollout", "history", "-n", "1000001"),
        ("shadow", "show", "--mismatches", "99999999999999999999"),
    ],
)
def test_counts_and_ports_out_of_range_are_usage_errors(
    embedded: str, args: tuple[str, ...]
) -> None:
    done = run(*args)
    assert done.exit_code == 2, done.output
    assert "Invalid value for" in done.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("up", "--pool-size", "0"), "--pool-size"),
        (("up", "--v2compat", "-1"), "--v2compat"),
        (("worker", "--lane", "v3", "--pool-size", "-1"), "--pool-size"),
        (("worker", "--lane", "v3", "--pool-size", "257"), "--pool-size"),
        (("demo", "--pool-size", "0"), "--pool-size"),
        (("sessions", "create", "--ttl", "-1"), "--ttl"),
        (("sessions", "create", "--ttl", "0"), "--ttl"),
        (("controller", "--once", "--min-samples", "-1"), "--min-samples"),
        (("controller", "--once", "--interval", "0"), "--interval"),
        (("controller", "--once", "--interval", "nan"), "--interval"),
        (("controller", "--once", "--bake", "-1"), "--bake"),
        (("controller", "--once", "--bake", "inf"), "--bake"),
        (("controller", "--once", "--max-error-rate", "1.5"), "--max-error-rate"),
        (("controller", "--once", "--max-error-rate", "nan"), "--max-error-rate"),
        (("shadow", "on", "--rate", "nan"), "--rate"),
        (("shadow", "on", "--rate", "-inf"), "--rate"),
    ],
)
def test_options_that_set_a_setting_take_its_range_as_usage_errors(
    embedded: str, args: tuple[str, ...], option: str
) -> None:
    done = run(*args)
    assert done.exit_code == 2, done.output
    assert f"Invalid value for '{option}'" in done.output  # the option, not a setting


def _every_parameter() -> Iterator[tuple[str, click.Parameter]]:
    pending: list[tuple[str, click.Command]] = [("snakepool", main)]
    while pending:
        path, command = pending.pop()
        yield from ((path, param) for param in command.params)
        if isinstance(command, click.Group):
            pending += [(f"{path} {n}", c) for n, c in command.commands.items()]


def test_no_number_option_is_unbounded() -> None:
    unbounded = [
        f"{path} {param.name}"
        for path, param in _every_parameter()
        if param.type in (click.INT, click.FLOAT)  # plain int/float: -1 and nan go through
        # click's FloatRange takes nan too (`shadow on --rate nan` got past click)
        or (isinstance(param.type, click.FloatRange) and not isinstance(param.type, Finite))
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    "name", ["a b", "a\n", "", "x" * 65, "a@b c", "a@%h", "caf\u00e9", "a/b", "[/]"]
)
def test_a_node_name_celery_cannot_take_is_a_usage_error(embedded: str, name: str) -> None:
    done = run("worker", "--lane", "v3", "--name", name)
    assert done.exit_code == 2, done.output
    assert "Invalid value for '--name'" in done.output
    assert "is not a node name" in done.output


@pytest.mark.parametrize("name", ["v3-1", "x" * 64, "a.b:c_d-e", "v3-1@host.example"])
def test_node_names_that_are_taken(name: str) -> None:
    assert node_name(None, None, name) == name  # type: ignore[arg-type]
