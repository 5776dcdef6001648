"""``ResultPoller.close`` ends even when its polling task misses the cancellation.

Seen in CI: ``AsyncClient.aclose()`` never returned. On Python 3.11 ``wait_for`` can
swallow a cancellation that meets its own timeout; the poller then went on, and once its
waiters had timed out it waited for the next one for ever — and ``close`` with it.
Here the poll itself swallows the first cancellation, which puts the poller in the same
place deterministically.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from snakepool.errors import PoolUnavailable
from snakepool.tasks.result_poller import ResultPoller

pytestmark = pytest.mark.timeout(30)


def test_close_ends_a_poller_that_swallowed_its_cancellation() -> None:
    polls: list[str] = []

    async def blocking(fn: Any, task_ids: list[str]) -> list[None]:
        polls.append("poll")
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if polls.count("swallowed") == 0:
                polls.append("swallowed")  # as 3.11's wait_for may do
                return [None] * len(task_ids)
            raise
        return [None] * len(task_ids)

    async def main() -> tuple[BaseException | None, float]:
        client = SimpleNamespace(app=SimpleNamespace(backend=object()))
        poller = ResultPoller(client, blocking)  # type: ignore[arg-type]
        waiter = asyncio.create_task(poller.wait("t-1", timeout=20))
        while not polls:
            await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(poller.close(lambda: PoolUnavailable("closed")), 5)
        took = loop.time() - started
        done, _ = await asyncio.wait({waiter}, timeout=5)
        return (waiter.exception() if done else None), took

    error, took = asyncio.run(main())
    assert isinstance(error, PoolUnavailable)  # the waiter got the close's error at once
    assert took < 2
