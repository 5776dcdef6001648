"""A stopping or draining pool fails its queued requests at once (they never started),
and a node's warm shutdown turns them into requeues, never failures.

Real interpreters; the node's Redis is fakeredis (only its heartbeat and metrics use it).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from celery.exceptions import Reject

from snakepool.config import load_settings
from snakepool.errors import PoolUnavailable
from snakepool.pool import Pool
from snakepool.tasks.worker.lanes import run_lane
from snakepool.tasks.worker.node import Node
from tests.integration.conftest import PoolFactory

pytestmark = pytest.mark.timeout(60)

#: Far longer than any test here waits: a waiter that sits it out fails the test.
QUEUE_TIMEOUT = 30.0


def busy_with_one_waiter(pool: Pool, executor: ThreadPoolExecutor) -> tuple[object, object]:
    """A sleep holding the pool's one interpreter and a ping queued behind it."""
    running = executor.submit(pool.execute, "sleep", {"seconds": 1.0})
    deadline = time.monotonic() + 10
    while pool.stats()["busy"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = executor.submit(pool.execute, "ping")
    while pool.stats()["queued"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return running, queued


@pytest.mark.parametrize("how", ["stop", "begin_drain"])
def test_queued_requests_fail_at_once_when_the_pool_stops(make_pool: PoolFactory, how: str) -> None:
    pool = make_pool(size=1, queue_timeout=QUEUE_TIMEOUT)
    with ThreadPoolExecutor(max_workers=3) as executor:
        running, queued = busy_with_one_waiter(pool, executor)
        started = time.monotonic()
        stopper = executor.submit(pool.stop, 10) if how == "stop" else None
        if how == "begin_drain":
            pool.begin_drain()
        with pytest.raises(PoolUnavailable, match="queued, not started"):
            queued.result(timeout=QUEUE_TIMEOUT)  # type: ignore[attr-defined]
        assert time.monotonic() - started < 0.5  # not after the sleep, nor QUEUE_TIMEOUT
        assert running.result(timeout=10)["slept"] >= 1.0  # type: ignore[attr-defined]
        with pytest.raises(PoolUnavailable):
            pool.execute("ping")  # new requests are refused too
        if stopper is not None:
            stopper.result(timeout=15)


def test_a_warm_shutdown_requeues_what_waits_for_an_interpreter(registry_dir: str) -> None:
    settings = load_settings(
        redis_url=f"fakeredis://{uuid.uuid4().hex}", pool_size=1, registry_dir=registry_dir,
        queue_timeout=QUEUE_TIMEOUT, startup_timeout=30, result_timeout=90,
    )  # fmt: skip
    node = Node(settings, name="drain@test", lanes=("v3",))
    node.pool = Pool.from_settings(settings)
    node.pool.start()
    try:

        def lane(command: str, args: dict[str, object]) -> object:
            request = SimpleNamespace(id=uuid.uuid4().hex, headers=None)
            return run_lane(node, "v3", request, command, args, None, {})

        with ThreadPoolExecutor(max_workers=3) as executor:
            running = executor.submit(lane, "sleep", {"seconds": 1.0})
            while node.pool.stats()["busy"] == 0:
                time.sleep(0.01)
            queued = executor.submit(lane, "ping", {})
            while node.pool.stats()["queued"] == 0:
                time.sleep(0.01)
            started = time.monotonic()
            shutdown = executor.submit(node.shutdown, 10)
            with pytest.raises(Reject) as rejected:
                queued.result(timeout=QUEUE_TIMEOUT)
            assert rejected.value.requeue is True  # back to the broker, not a failure
            assert time.monotonic() - started < 0.5
            assert running.result(timeout=10)["slept"] >= 1.0  # the started one finished
            assert shutdown.result(timeout=15) is True
        summary = node.metrics.summary("v3")
        assert (summary["requests"], summary["errors"]) == (1, 0)
    finally:
        node.stop(grace=0)  # stops the pool (no-op when the shutdown did)
