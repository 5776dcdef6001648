"""Identifiers match as a whole: ``"abc\\n"`` is not a session id (issue 8.6).

Every entry point that takes an id is checked against one independent oracle: 1-128
characters, each one of ``A-Z a-z 0-9 _ . : -`` (written without a regex, so the test
cannot share the bug it guards against).
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.config.ids import (
    validate_command_name,
    validate_node_name,
    validate_program_id,
    validate_request_id,
    validate_session_id,
)
from snakepool.config.keys import Keys
from snakepool.config.quoting import DESCRIBE_CHARS, describe
from snakepool.errors import ConfigError, InvalidArguments
from snakepool.pool.interpreter import programs
from snakepool.sessions import SessionStore

ALLOWED = frozenset(string.ascii_letters + string.digits + "_.:-")

#: Each is refused everywhere an id is taken.
BAD_IDS = [
    "abc\n",  # `$` of `^...$` with re.match lets a final newline through
    "abc\r",
    "abc\r\n",
    "\nabc",
    "a b",
    "",
    "x" * 129,
    "abc\x00",
    "abc\t",
    "\u0430bc",  # Cyrillic a
    "\uff41bc",  # fullwidth a
    "abc\u200b",  # zero-width space
    "\u212a",  # Kelvin sign: matches [K] under re.IGNORECASE
    "caf\u00e9",
    "a/b",
    "a;b",
]
GOOD_IDS = ["a", "abc", "s-1", "A.b:c_d-e", "x" * 128, "0", "..", "::"]


def oracle(value: str) -> bool:
    """The contract of DESIGN.md §5, without a regex."""
    return 1 <= len(value) <= 128 and all(c in ALLOWED for c in value)


def test_the_oracle_agrees_with_the_tables() -> None:
    assert not any(oracle(bad) for bad in BAD_IDS)
    assert all(oracle(good) for good in GOOD_IDS)


@pytest.fixture
def store() -> Iterator[SessionStore]:
    client = fakeredis.FakeRedis()
    yield SessionStore(client, prefix="t:", default_ttl=60)
    client.close()


def _validators() -> dict[str, Callable[[Any], str]]:
    return {
        "session": validate_session_id,
        "program": validate_program_id,
        "request": validate_request_id,
        "command": validate_command_name,
        "interpreter program": programs.validate_program_id,
    }


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("kind", sorted(_validators()))
def test_every_id_validator_refuses(kind: str, bad: str) -> None:
    with pytest.raises(InvalidArguments):
        _validators()[kind](bad)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_session_store_refuses_and_writes_nothing(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidArguments, match="invalid session id"):
        store.create(session_id=bad)
    for call in (store.get, store.touch, store.exists, store.delete, store.programs):
        with pytest.raises(InvalidArguments):
            call(bad)
    sid = store.create(session_id="ok")
    with pytest.raises(InvalidArguments, match="invalid program id"):
        store.put_program(sid, bad, {"signature": "q -> a"})
    with pytest.raises(InvalidArguments):
        store.get_program(sid, bad)
    with pytest.raises(InvalidArguments, match="invalid node name"):
        store.bind(sid, bad)
    # Nothing but the one good session was written.
    assert sorted(store.client.keys("*")) == [b"t:session:ok", b"t:sessions"]
    assert store.client.zrange("t:sessions", 0, -1) == [b"ok"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_flags_refuse_bad_override_keys_and_commands(bad: str) -> None:
    flags = FlagStore(fakeredis.FakeRedis(), prefix="t:")
    with pytest.raises(InvalidArguments, match="in overrides"):
        flags.update(lambda f: RolloutFlags(overrides={bad: "v3"}), who="t", why="t")
    with pytest.raises(InvalidArguments, match="V3 allow-list"):
        flags.update(lambda f: RolloutFlags(v3_commands=("ping", bad)), who="t", why="t")
    assert flags.version() == 0  # nothing was written


def test_flags_drop_malformed_ids_an_older_version_stored() -> None:
    """A stored ``"abc\\n"`` override must not make every later change (rollback!) fail."""
    flags = FlagStore(fakeredis.FakeRedis(), prefix="t:")
    stored = RolloutFlags(
        overrides={"abc\n": "v3", "good": "v2compat"}, v3_commands=("x\n", "ping")
    )
    flags.client.set("t:rollout", json.dumps(stored.to_dict()))
    assert flags.read().overrides == {"good": "v2compat"}
    assert flags.read().v3_commands == ("ping",)
    assert flags.rollback(who="t", why="incident").overrides == {"good": "v2compat"}


@pytest.mark.parametrize("bad", BAD_IDS)
def test_keys_are_never_built_from_bad_ids(bad: str) -> None:
    keys = Keys("t:")
    for build in (keys.session, keys.programs, keys.shadow):
        with pytest.raises(InvalidArguments):
            build(bad)
    with pytest.raises(InvalidArguments, match="invalid node name"):
        keys.node(bad)


@pytest.mark.parametrize(
    "name", ["v3-12@host", "celery@worker-1.example.com", "router-1@h", "plain"]
)
def test_node_names(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize("name", ["v3@host\n", "a@b@c", "@host", "v3@", "v3@ho st", "x" * 129])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(InvalidArguments, match="invalid node name"):
        validate_node_name(name)


def test_a_request_id_cannot_name_another_shadow_key() -> None:
    keys = Keys("t:")
    assert keys.shadow("c0ffee-1") == "t:shadow:c0ffee-1"
    for reserved in ("counts", "mismatches"):
        with pytest.raises(InvalidArguments, match="reserved"):
            keys.shadow(reserved)


def test_lanes_are_the_two_lanes() -> None:
    keys = Keys("t:")
    assert keys.lane_metrics("v3") == "t:metrics:v3"
    with pytest.raises(InvalidArguments, match="unknown lane"):
        keys.lane_metrics("v3\n")


@pytest.mark.parametrize(
    "bad", ["pkg.mod\n", "pkg. mod", "pkg..mod", ".pkg", "pkg.", "p\u0430ckage"]
)
def test_adapter_paths_match_as_a_whole(bad: str) -> None:
    from snakepool.config import load_pool_settings

    with pytest.raises(ConfigError, match="adapter: Value error, must be a dotted module path"):
        load_pool_settings(adapter=bad)


def test_the_client_refuses_before_touching_anything() -> None:
    from snakepool.config import load_settings
    from snakepool.tasks.client import Client

    client = Client(
        settings=load_settings(redis_url="fakeredis://ids", broker_url="fakeredis://ids")
    )
    try:
        for bad in ("abc\n", "a b", ""):
            with pytest.raises(InvalidArguments, match="invalid session id"):
                client.get_session(bad)
            with pytest.raises(InvalidArguments, match="invalid session id"):
                client.submit("ping", session_id=bad)
        sid = client.create_session(ttl=60)
        assert client.get_session(sid)["id"] == sid  # type: ignore[index]
    finally:
        client.close()


_TEXT = st.one_of(
    st.text(alphabet=sorted(ALLOWED), min_size=0, max_size=130),
    st.text(alphabet=[*sorted(ALLOWED), "\n", "\r", " ", "\u0430", "\x00", "/"], max_size=10),
    st.text(max_size=12),
    st.sampled_from(BAD_IDS + GOOD_IDS),
)


@settings(max_examples=50, deadline=None)
@given(_TEXT)
def test_an_id_is_accepted_iff_it_fully_matches(value: str) -> None:
    """Property: every entry point accepts exactly the ids of the contract."""
    expected = oracle(value)
    for kind, validate in _validators().items():
        try:
            assert validate(value) == value, kind
            accepted = True
        except InvalidArguments:
            accepted = False
        assert accepted == expected, (kind, value)
    client = fakeredis.FakeRedis()
    store = SessionStore(client, prefix="p:")
    try:
        assert store.create(session_id=value) == value
        created = True
    except InvalidArguments:
        created = False
    assert created == expected, value
    if created:
        assert store.get(value)["id"] == value  # type: ignore[index]
    try:
        RolloutFlags(overrides={value: "v3"}).validate()
        overridden = True
    except InvalidArguments:
        overridden = False
    assert overridden == expected, value
    client.close()


def test_describe_quotes_briefly_and_never_renders_a_container() -> None:
    deep: object = 1
    for _ in range(sys.getrecursionlimit() + 50):
        deep = [deep]
    assert describe("x" * 100) == repr("x" * DESCRIBE_CHARS)
    assert (describe(None), describe(True), describe(2.5), describe(-7)) == (
        "None", "True", "2.5", "-7",
    )  # fmt: skip
    assert describe(10**5000) == "an int of 16610 bits"  # str() would raise ValueError
    assert describe(deep) == "a list"  # str() would raise RecursionError
    assert describe({"k": list(range(10**5))}) == "a dict"
