"""FlagCache under concurrent callers: no caller ever routes by flags that were not read
from the store (found by a burst of zero-hop requests: the first ones of a new client
went to V2-compat at a 100 % rollout, by the default flags)."""

from __future__ import annotations

import threading
from dataclasses import replace

import fakeredis
import pytest
import redis

from snakepool.config.flags import FlagCache, FlagStore, RolloutFlags


class GatedStore(FlagStore):
    """A store whose reads wait at a gate, so a read can be held in flight."""

    def __init__(self) -> None:
        super().__init__(fakeredis.FakeRedis(), prefix="gate:")
        self.gate = threading.Event()
        self.gate.set()
        self.reading = threading.Event()
        self.reads = 0

    def read(self) -> RolloutFlags:
        self.reads += 1
        self.reading.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().read()


def in_thread(cache: FlagCache, results: list[RolloutFlags]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(cache.get()), daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_callers_during_the_first_read_wait_for_it_and_never_get_the_defaults() -> None:
    store = GatedStore()
    store.update(lambda f: replace(f, percent=100, forced_lane="v3"), who="t", why="t")
    cache = FlagCache(store, max_age=60)
    store.gate.clear()
    results: list[RolloutFlags] = []
    first = in_thread(cache, results)
    assert store.reading.wait(10)  # the first read is in flight
    others = [in_thread(cache, results) for _ in range(4)]
    for thread in others:
        thread.join(0.2)
        assert thread.is_alive()  # waiting for the read, not answering with defaults
    store.gate.set()
    for thread in (first, *others):
        thread.join(10)
    assert [(f.percent, f.forced_lane) for f in results] == [(100, "v3")] * 5
    assert store.reads == 1  # one read served them all


@pytest.mark.timeout(30)
def test_a_refresh_in_flight_leaves_the_others_on_the_flags_it_replaces() -> None:
    store = GatedStore()
    store.set_percent(30, who="t", why="t")
    cache = FlagCache(store, max_age=0.0)
    assert cache.get().percent == 30
    store.set_percent(60, who="t", why="t")
    store.gate.clear()
    store.reading.clear()
    refreshed: list[RolloutFlags] = []
    refresher = in_thread(cache, refreshed)
    assert store.reading.wait(10)
    assert cache.get().percent == 30  # no wait: the last flags read, not the defaults
    store.gate.set()
    refresher.join(10)
    assert refreshed[0].percent == 60 and cache.get().percent == 60


class DownStore(FlagStore):
    """Redis down for the first ``failures`` reads."""

    def __init__(self, failures: int) -> None:
        super().__init__(fakeredis.FakeRedis(), prefix="down:")
        self.failures = failures

    def read(self) -> RolloutFlags:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Error 111 connecting to flags")
        return super().read()


def test_until_the_first_read_succeeds_every_caller_gets_the_error() -> None:
    store = DownStore(failures=2)
    store.set_percent(100, who="t", why="t")
    cache = FlagCache(store, max_age=60)
    for _ in range(2):  # not the defaults for max_age after one failure: the error again
        with pytest.raises(redis.ConnectionError):
            cache.get()
    assert cache.get().percent == 100
