"""What a caller of ``Pool.execute`` gets wrong, and where it calls from (review items 5, 9).

- A ``timeout`` that cannot be waited on is ``InvalidArguments`` before anything is sent:
  the command never runs and no interpreter is recycled for it.
- A pool belongs to the process that started it: a forked child gets ``PoolUnavailable``
  (saying why) and cannot stop it, while the parent goes on serving, unaffected.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import pytest

from snakepool.errors import InvalidArguments, PoolUnavailable
from snakepool.pool import Pool
from tests.integration.conftest import PoolFactory

#: Timeouts that cannot be waited on (``inf`` and ``1e300`` overflowed the poll after the
#: request was sent; ``"5"`` and ``[1]`` could not be compared).
BAD_TIMEOUTS: list[Any] = [
    math.inf, 1e300, "5", [1], -1, 0, -0.0, math.nan, True, 86400.5, 10**400, object(),
]  # fmt: skip


def test_a_timeout_that_cannot_be_waited_on_is_refused_before_anything_is_sent(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=1)
    pid = pool.interpreter_pids()[0]
    for timeout in BAD_TIMEOUTS:
        ran_before = pool.execute("get_stats")["requests"]
        with pytest.raises(InvalidArguments, match="timeout must be a number of seconds above 0"):
            pool.execute("sleep", {"seconds": 0.01}, timeout=timeout)
        # Only the get_stats above reached the interpreter: the refused request never did.
        assert pool.execute("get_stats")["requests"] == ran_before + 1, timeout
    stats = pool.stats()
    assert pool.interpreter_pids() == [pid]
    assert (stats["crashes"], stats["timeouts"], stats["recycled"]) == (0, 0, 0)
    assert pool.execute("sleep", {"seconds": 0.01}, timeout=86400) is not None  # the maximum


def _in_the_child(pool: Pool, registry_dir: str) -> dict[str, Any]:
    """What a forked child sees of its parent's pool (runs in the child)."""
    refusals = []
    for i in range(50):
        try:
            pool.execute("echo", {"who": "child", "i": i}, timeout=3)
            refusals.append("served")
        except PoolUnavailable as exc:
            refusals.append(exc.message)
    try:
        pool.start()
        started = "started"
    except PoolUnavailable as exc:
        started = exc.message
    stopping = time.monotonic()
    pool.stop(grace=5)  # must leave the parent's interpreters alone, at once
    stopped_in = time.monotonic() - stopping
    with Pool(size=1, registry_dir=registry_dir, startup_timeout=30) as own:  # the remedy
        own_pong = own.execute("ping")["pong"]
    return {
        "refusals": sorted(set(refusals)),
        "started": started,
        "stopped_in": stopped_in,
        "own_pong": own_pong,
        "pid": os.getpid(),
    }


@pytest.mark.timeout(120)
def test_a_forked_child_gets_pool_unavailable_and_the_parent_is_unaffected(
    make_pool: PoolFactory, registry_dir: str
) -> None:
    pool = make_pool(size=2)
    pids = sorted(pool.interpreter_pids())
    assert pool.execute("ping")["pong"] is True
    parent = os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # never back into pytest from here
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(_in_the_child(pool, registry_dir)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    # Meanwhile the parent serves, and every reply is its own (before the fix the two
    # processes read each other's replies: "protocol violation: reply to another request").
    for i in range(300):
        assert pool.execute("echo", {"who": "parent", "i": i}) == {"who": "parent", "i": i}
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"null")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and report is not None

    (refusal,) = report["refusals"]  # every one of the child's 50 requests, the same way
    assert f"started by process {parent}" in refusal
    assert f"this process ({report['pid']}) was forked from it" in refusal
    assert "start a Pool in the child" in refusal
    assert f"started by process {parent}" in report["started"]
    assert report["stopped_in"] < 1.0 and report["own_pong"] is True

    # The parent's pool: the same interpreters, nothing crashed, still serving.
    stats = pool.stats()
    assert sorted(pool.interpreter_pids()) == pids
    assert (stats["crashes"], stats["errors"], stats["timeouts"]) == (0, 0, 0)
    assert stats["idle"] + stats["busy"] + stats["starting"] == stats["size"] == 2
    assert pool.execute("echo", {"after": True}) == {"after": True}


def test_a_pool_created_before_the_fork_but_started_after_it_is_the_childs(
    make_pool: PoolFactory,
) -> None:
    # Ownership is taken at start: creating the pool in a parent (a module-level Pool
    # object, say) and starting it in the child is fine.
    pool = make_pool(size=1, start=False)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_end)
            with pool:
                os.write(write_end, json.dumps(pool.execute("echo", {"in": "child"})).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read() or b"null")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == {"in": "child"}
