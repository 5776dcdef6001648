from dataclasses import replace

import fakeredis
import pytest

from snakepool.config.flags import FlagCache, FlagStore, RolloutFlags
from snakepool.errors import InvalidArguments
from snakepool.tasks.rollout.routing import bucket, decide

SESSIONS = [f"session-{i}" for i in range(2000)]


def lanes(flags: RolloutFlags) -> dict[str, str]:
    return {s: decide("execute_program", None, s, flags) for s in SESSIONS}


def test_bucket_is_unleash_normalized_value() -> None:
    # murmur3_32("a:b", seed 0) = 2722392131 (reference murmur3), so the bucket is 32.
    assert bucket("b", group="a") == 2722392131 % 100 + 1 == 32
    assert all(1 <= bucket(s) <= 100 for s in SESSIONS)


def test_split_is_close_to_the_percentage() -> None:
    for percent in (10, 50, 90):
        share = list(lanes(RolloutFlags(percent=percent)).values()).count("v3") / len(SESSIONS)
        assert abs(share - percent / 100) < 0.05


def test_raising_only_moves_v2_to_v3() -> None:
    previous = lanes(RolloutFlags(percent=0))
    assert set(previous.values()) == {"v2compat"}
    for percent in (1, 10, 25, 50, 75, 100):
        current = lanes(RolloutFlags(percent=percent))
        moved_back = [s for s in SESSIONS if previous[s] == "v3" and current[s] != "v3"]
        assert moved_back == []
        previous = current
    assert set(previous.values()) == {"v3"}


def test_precedence() -> None:
    flags = RolloutFlags(percent=100, overrides={"pinned": "v2compat"}, v3_commands=("ping",))
    assert decide("ping", None, "pinned", flags) == "v2compat"  # override beats percent
    assert decide("calculate", None, "s", flags) == "v2compat"  # not on the allow-list
    assert decide("ping", None, "s", flags) == "v3"
    forced = replace(flags, forced_lane="v3")
    assert decide("calculate", None, "pinned", forced) == "v3"  # kill switch beats all


def test_sessionless_requests_use_the_request_id() -> None:
    flags = RolloutFlags(percent=50)
    assert {decide("ping", None, None, flags, request_id="r1") for _ in range(20)} == {
        decide("ping", None, None, flags, request_id="r1")
    }


def test_flag_store_versions_and_audit() -> None:
    store = FlagStore(fakeredis.FakeRedis(), prefix="t:")
    assert store.read().percent == 0 and store.version() == 0
    store.set_percent(10, who="ops", why="first step")
    flags = store.set_percent(50, who="ops", why="looks good")
    assert (flags.percent, flags.previous_percent, flags.version) == (50, 10, 2)
    rolled = store.rollback(who="controller", why="error rate 7%")
    assert rolled.percent == 0 and rolled.paused and rolled.version == 3
    history = store.history()
    assert [h["version"] for h in history] == [3, 2, 1]
    assert history[0]["who"] == "controller" and history[0]["why"] == "error rate 7%"
    assert history[0]["old"]["percent"] == 50 and history[0]["new"]["percent"] == 0
    with pytest.raises(InvalidArguments, match="from 0 to 100"):
        store.set_percent(101, who="ops", why="typo")
    assert store.version() == 3  # nothing written


def test_cache_sees_a_change_within_max_age() -> None:
    store = FlagStore(fakeredis.FakeRedis(), prefix="t:")
    cache = FlagCache(store, max_age=0.0)
    assert cache.get().percent == 0
    store.set_percent(30, who="ops", why="t")
    assert cache.get().percent == 30
    slow = FlagCache(store, max_age=3600)
    assert slow.get().percent == 30
    store.set_percent(40, who="ops", why="t")
    assert slow.get().percent == 30  # cached until max_age passes
