"""Rollout flags that cannot be read (review finding 10): a typed ``ConfigError`` naming
the key, never a raw ``JSONDecodeError``; a :class:`FlagCache` keeps serving the last
good flags; any change (a rollback first of all) writes them anew."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import load_settings
from snakepool.config.flags import FlagCache, FlagStore
from snakepool.config.keys import Keys
from snakepool.config.rollout_flags import RolloutFlags
from snakepool.errors import ConfigError, InvalidArguments
from snakepool.sessions import redis_from_url
from snakepool.tasks.client import Client

KEYS = Keys()

UNREADABLE = [
    (b"not json", "Expecting value"),
    (b'{"reason": "\xc3\x28"}', "can't decode"),  # not UTF-8
    (b"[1, 2]", "a JSON list, not an object"),
    (b'"text"', "a JSON str, not an object"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"percent": "50"}', "percent must be a whole number"),
    (b'{"percent": true}', "percent must be a whole number"),
    (b'{"v3_commands": "ping"}', "v3_commands must be a list"),
    (b'{"excluded_commands": [1]}', "excluded_commands must be a list"),
    (b'{"overrides": []}', "overrides must be an object"),
    (b'{"schedule": [1, "5"]}', "schedule must be a list"),
    (b'{"shadow_rate": NaN}', "shadow_rate must be a finite number"),
    (b'{"paused": "no"}', "paused must be true or false"),
    (b'{"percent": 150}', "percent must be from 0 to 100"),
    (b'{"overrides": {"s-1": "v9"}}', "override lanes must be one of"),
    (b'{"forced_lane": "v4"}', "forced lane must be one of"),
    (b'{"schedule": []}', "schedule must be percentages"),
]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    made = redis_from_url(f"fakeredis://{uuid.uuid4().hex}")
    yield made
    made.close()


@pytest.mark.parametrize(("raw", "why"), UNREADABLE, ids=lambda v: repr(v)[:30])
def test_unreadable_flags_are_a_config_error_naming_the_key(
    client: redis.Redis, raw: bytes, why: str
) -> None:
    client.set(KEYS.rollout, raw)
    with pytest.raises(ConfigError) as caught:
        FlagStore(client).read()
    assert caught.value.message.startswith(
        f"the rollout flags in Redis key {KEYS.rollout!r} cannot be read ("
    )
    assert why in caught.value.message
    assert caught.value.data["key"] == KEYS.rollout


def test_a_key_of_another_type_and_a_bad_version_are_config_errors(client: redis.Redis) -> None:
    client.hset(KEYS.rollout, "percent", 50)
    with pytest.raises(ConfigError, match="the key holds another type than a string"):
        FlagStore(client).read()
    client.set(KEYS.rollout_version, "seven")
    with pytest.raises(ConfigError, match=r"rollout:version' cannot be read \(not a whole number"):
        FlagStore(client).version()


def test_the_cache_keeps_serving_the_last_good_flags(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlagStore(client)
    store.set_percent(40, who="t", why="good")
    cache = FlagCache(store, max_age=0.0)
    assert cache.get().percent == 40
    client.set(KEYS.rollout, b"{broken")
    client.set(KEYS.rollout_version, 99)  # a new version: the cache reads it
    with caplog.at_level(logging.WARNING, logger="snakepool.flags"):
        for _ in range(5):
            assert cache.get().percent == 40 and cache.get().version == 1
    warned = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warned) == 1 and "serving flags version 1" in warned[0].getMessage()
    assert cache.version_in_use() == 1
    store.rollback(who="t", why="repair")  # written anew: the cache takes it
    assert cache.get().percent == 0 and cache.get().version == 100


def test_a_cache_that_never_read_good_flags_raises_but_reports_version_0(
    client: redis.Redis,
) -> None:
    client.set(KEYS.rollout, b"[]")
    client.set(KEYS.rollout_version, 3)
    cache = FlagCache(FlagStore(client), max_age=0.0)
    with pytest.raises(ConfigError, match="a JSON list, not an object"):
        cache.get()
    assert cache.version_in_use() == 0  # a heartbeat never fails on it


def test_a_change_replaces_unreadable_flags_and_says_so_in_the_audit(client: redis.Redis) -> None:
    store = FlagStore(client)
    store.set_percent(25, who="t", why="before")
    client.set(KEYS.rollout, b'{"percent": "lots"}')
    rolled = store.rollback(who="ops", why="flags were corrupt")
    assert (rolled.percent, rolled.paused, rolled.version) == (0, True, 2)
    assert store.read() == rolled and store.version() == 2
    entry = store.history(1)[0]
    assert (
        entry["details"]["replaced_unreadable_flags"]
        == "percent must be a whole number, not 'lots'"
    )
    assert entry["details"]["action"] == "rollback"


def test_a_direct_client_gets_a_config_error_and_a_router_client_still_sends() -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"
    settings = load_settings(redis_url=url, broker_url=url)
    direct, routed = Client(settings=settings, routing="direct"), Client(settings=settings)
    sent: list[object] = []
    routed.app.send_task = lambda *a, **k: sent.append(a)  # type: ignore[method-assign]
    try:
        direct.redis.set(direct.keys.rollout, b"{not json")
        direct.redis.set(direct.keys.rollout_version, 4)
        with pytest.raises(ConfigError, match="cannot be read"):
            direct.submit("ping")
        with pytest.raises(ConfigError, match="cannot be read"):
            direct.decide("ping")
        routed.submit("ping")  # the router node decides, with the flags it last read
        assert len(sent) == 1
    finally:
        direct.close()
        routed.close()


# ------------------------------------------- what is written always reads back

_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
    st.integers(2**1024, 10**400),  # past a float: math.isfinite raised OverflowError
    st.text(max_size=8), st.lists(st.one_of(st.integers(0, 100), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)  # fmt: skip
_FIELDS = [f for f in RolloutFlags.__dataclass_fields__ if f not in ("version", "updated_at")]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(_FIELDS), value=_ANY_VALUE)
def test_a_change_is_refused_or_reads_back(name: str, value: object) -> None:
    """A change of any field to any value is InvalidArguments, nothing written — or the
    flags it writes are readable. `Client.set_shadow("no")` wrote ``"shadow": "no"``:
    every reader then failed ("flags cannot be read") and the next change silently reset
    every flag to the defaults."""
    store = FlagStore(redis_from_url(f"fakeredis://{uuid.uuid4().hex}"))
    try:
        store.update(lambda f: replace(f, **{name: value}), who="t", why="any value")
    except InvalidArguments:
        assert store.read().version == 0  # nothing was written
        return
    assert store.read().version == 1  # raises ConfigError if it cannot be read


def test_shadow_must_be_turned_on_or_off_with_a_bool() -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"
    made = Client(settings=load_settings(redis_url=url, broker_url=url))
    try:
        with pytest.raises(InvalidArguments, match="enabled must be True or False"):
            made.set_shadow("no")  # type: ignore[arg-type]
        # Review 8: 2**1024 was a raw OverflowError (formatting the audit reason).
        for rate in (2**1024, -1, 1.5, float("nan"), "0.5"):
            with pytest.raises(InvalidArguments, match="shadow rate must be a number from 0"):
                made.set_shadow(True, rate)  # type: ignore[arg-type]
        assert made.rollout_state()["version"] == 0
    finally:
        made.close()


@pytest.mark.parametrize("reason", [None, 5, "", "   ", b"bytes"])
def test_every_change_through_the_client_needs_a_reason(reason: object) -> None:
    """The CLI refuses a blank --reason; the client took None, 5 or "" and the audit
    trail said why: "None", "5", ""."""
    url = f"fakeredis://{uuid.uuid4().hex}"
    made = Client(settings=load_settings(redis_url=url, broker_url=url))
    try:
        for change in (lambda: made.set_rollout(10, reason), lambda: made.rollback(reason)):
            with pytest.raises(InvalidArguments, match="say why"):
                change()  # type: ignore[no-untyped-call]
        assert made.rollout_state()["version"] == 0  # nothing written
        assert made.flags.history(10) == []
    finally:
        made.close()


@pytest.mark.parametrize("kind", ["string", "hash", "list"])
def test_a_change_that_cannot_be_audited_changes_nothing(client: redis.Redis, kind: str) -> None:
    """Review 8: with the audit key holding another type, MULTI applied the flags and
    failed the XADD — the caller was told the change failed, the change stood, unaudited."""
    store = FlagStore(client)
    before = store.set_percent(25, who="t", why="before")
    client.delete(KEYS.audit)
    {"string": lambda: client.set(KEYS.audit, "x"),
     "hash": lambda: client.hset(KEYS.audit, "a", "b"),
     "list": lambda: client.rpush(KEYS.audit, "x")}[kind]()  # fmt: skip
    with pytest.raises(ConfigError, match=f"the audit trail {KEYS.audit} holds a {kind}"):
        store.rollback(who="ops", why="the audit key is broken")
    assert store.read() == before and store.version() == before.version  # nothing changed
    client.delete(KEYS.audit)
    assert store.rollback(who="ops", why="fixed").version == before.version + 1
