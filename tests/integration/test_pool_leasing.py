"""Waiting and leasing faults, with real interpreter processes (issues 8.2 and 8.3).

* No work waits while an interpreter that may serve it is idle, and the waiters of an
  interpreter that leaves service are served by another (or its replacement).
* On every error path the leased interpreter is given back or replaced: unsendable
  arguments never take one, and an exception of the caller's own (KeyboardInterrupt)
  between lease and release loses none.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from snakepool.errors import InvalidArguments, WorkerCrashed
from snakepool.pool import Pool
from snakepool.pool.protocol import Channel
from snakepool.pool.worker import Interpreter
from tests.integration.conftest import PoolFactory


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that has no event to wait on (another thread's progress)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def accounted(pool: Pool) -> bool:
    """Every interpreter is idle, busy or starting: none was lost."""
    stats = pool.stats()
    return stats["idle"] + stats["busy"] + stats["starting"] == stats["size"]


def settled(pool: Pool) -> bool:
    stats = pool.stats()
    return stats["idle"] == stats["size"] and stats["queued"] == 0


# --------------------------------------------------------------- issue 8.2


def test_unpinned_request_is_served_while_a_pinned_one_waits(make_pool: PoolFactory) -> None:
    """The reported input: size 2, a request pinned to the busy interpreter waits; the
    unpinned request after it must run on the idle one at once, not time out."""
    pool = make_pool(size=2, queue_timeout=5)
    bound = pool.execute("get_stats", affinity="s")["pid"]
    with ThreadPoolExecutor(max_workers=2) as executor:
        busy = executor.submit(pool.execute, "sleep", {"seconds": 2}, affinity="s")
        wait_for(lambda: pool.stats()["busy"] == 1)
        pinned = executor.submit(pool.execute, "get_stats", affinity="s")
        wait_for(lambda: pool.stats()["queued"] == 1)
        started = time.monotonic()
        assert pool.execute("echo", {"n": 42}) == {"n": 42}
        other = pool.execute("get_stats")["pid"]
        assert time.monotonic() - started < 1.5  # promptly: not after queue_timeout
        assert other != bound and pool.stats()["queued"] == 1  # the pinned one still waits
        assert busy.result(10)["slept"] >= 2
        assert pinned.result(10)["pid"] == bound  # then its own interpreter serves it
    assert pool.stats()["errors"] == 0


def test_waiters_of_a_killed_interpreter_are_served_by_its_replacement(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=1, queue_timeout=15)
    bound = pool.execute("get_stats", affinity="s")["pid"]
    with ThreadPoolExecutor(max_workers=2) as executor:
        busy = executor.submit(pool.execute, "sleep", {"seconds": 30}, affinity="s")
        wait_for(lambda: pool.stats()["busy"] == 1)
        pinned = executor.submit(pool.execute, "get_stats", affinity="s")
        wait_for(lambda: pool.stats()["queued"] == 1)
        started = time.monotonic()
        os.kill(bound, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            busy.result(10)
        moved = pinned.result(10)["pid"]
        assert time.monotonic() - started < 5  # not after queue_timeout
    assert moved != bound and moved in pool.interpreter_pids()
    assert pool.affinity_of("s") == moved


def test_waiters_of_a_recycled_interpreter_are_served_by_its_replacement(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=1, queue_timeout=15, max_requests_per_worker=2)
    bound = pool.execute("get_stats", affinity="s")["pid"]
    with ThreadPoolExecutor(max_workers=2) as executor:
        second = executor.submit(pool.execute, "sleep", {"seconds": 0.5}, affinity="s")
        wait_for(lambda: pool.stats()["busy"] == 1)
        pinned = executor.submit(pool.execute, "get_stats", affinity="s")
        wait_for(lambda: pool.stats()["queued"] == 1)
        assert second.result(10)["slept"] >= 0.5  # its 2nd request: it is recycled now
        moved = pinned.result(10)["pid"]
    assert moved != bound and pool.affinity_of("s") == moved
    assert pool.stats()["recycled"] == 1 and pool.stats()["crashes"] == 0


# --------------------------------------------------------------- issue 8.3


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"when": datetime.date(2026, 11, 30)}, "date"),
        ({"tags": {"a", "b"}}, "set"),
        ({"thing": object()}, "object"),
        ({"outer": {1: "one"}}, "keys must be strings"),
        ({"outer": [{(1, 2): "pair"}]}, "keys must be strings"),
        ({"deep": _nested(600)}, "nested more than"),
        ({"text": "\ud800"}, "not valid Unicode"),
    ],
    ids=["datetime", "set", "object", "int-key", "tuple-key", "600-deep", "surrogate"],
)
def test_unsendable_args_are_invalid_arguments_and_cost_no_interpreter(
    make_pool: PoolFactory, args: dict[str, Any], needle: str
) -> None:
    pool = make_pool(size=1)
    pid = pool.interpreter_pids()[0]
    served_before = pool.execute("get_stats")["requests"]
    with pytest.raises(InvalidArguments, match=needle) as caught:
        pool.execute("echo", args)
    assert caught.value.category == "client"
    stats = pool.stats()
    assert stats["idle"] + stats["busy"] + stats["starting"] == stats["size"] == 1
    assert stats["busy"] == 0 and stats["crashes"] == 0 and stats["errors"] == 1
    assert pool.execute("ping")["pid"] == pid  # the same interpreter, still serving
    # It never even saw the bad request: only get_stats and ping reached it.
    assert pool.execute("get_stats")["requests"] == served_before + 2


@pytest.mark.parametrize("where", ["before-send", "after-send"])
def test_keyboard_interrupt_between_lease_and_release_loses_no_interpreter(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    pool = make_pool(size=1)
    target, name = (
        (Interpreter, "call_framed") if where == "before-send" else (Channel, "receive_payload")
    )
    original = getattr(target, name)
    calls = {"n": 0}

    def interrupted_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(target, name, interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pool.execute("echo", {"n": 1})
    wait_for(lambda: settled(pool))  # given back, or replaced (after-send: retired)
    assert accounted(pool)
    # The next request gets its own reply, never the interrupted one's.
    assert pool.execute("echo", {"n": 2}) == {"n": 2}
    assert pool.execute("ping")["pong"] is True
    assert pool.stats()["crashes"] == 0


@pytest.mark.timeout(30)
def test_keyboard_interrupt_while_queued_leaves_the_queue(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, queue_timeout=20)
    main = threading.get_ident()
    with ThreadPoolExecutor(max_workers=2) as executor:
        busy = executor.submit(pool.execute, "sleep", {"seconds": 1})
        wait_for(lambda: pool.stats()["busy"] == 1)

        def interrupt_when_queued() -> None:
            wait_for(lambda: pool.stats()["queued"] == 1)
            signal.pthread_kill(main, signal.SIGINT)

        interrupter = executor.submit(interrupt_when_queued)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pool.execute("ping")
        assert time.monotonic() - started < 5  # interrupted, not timed out
        interrupter.result(5)
        assert pool.stats()["queued"] == 0
        assert busy.result(10)["slept"] >= 1
    wait_for(lambda: settled(pool))
    assert pool.execute("echo", {"n": 3}) == {"n": 3}
