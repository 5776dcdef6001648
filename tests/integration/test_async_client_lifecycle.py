"""AsyncClient's lifecycle and its waits, on a real Redis with no node running (so an
awaited request never resolves unless the test stores its result):

- ``aclose()`` ends every awaited request at once with ``PoolUnavailable`` (it used to
  leave them waiting out their whole timeout, then fail with a builtin ``RuntimeError``);
- a closed client refuses every call with ``PoolUnavailable`` (was: the builtin
  ``RuntimeError: cannot schedule new futures after shutdown``), and a second
  ``aclose()`` does nothing (it raised that ``RuntimeError`` too);
- ``aclose()`` never holds the event loop while a thread finishes a blocking call (it
  joined the threads on the loop);
- a poll of the results that fails because Redis dropped the connection is tried again:
  the awaited request still gets its result (every waiter used to get the raw
  ``redis.ConnectionError`` at once, although its request was still on its way).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from celery import states

from snakepool import AsyncClient
from snakepool.errors import PoolUnavailable
from snakepool.tasks.result_poller import ResultPoller

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Seconds each await is given here: far below the 30 s the requests would wait.
PROMPTLY = 3.0
#: Longest the loop may fall behind while aclose() waits for a busy thread (the thread
#: blocks for BLOCKING seconds; a close that joined it on the loop lagged that long).
MAX_LOOP_LAG = 0.3
BLOCKING = 1.0


async def _until_awaited(client: AsyncClient, count: int) -> None:
    """Until ``count`` waits are registered with the client's poller (a private look:
    nothing public says a wait has begun)."""
    deadline = time.monotonic() + 20  # sending can be slow on a loaded machine
    while time.monotonic() < deadline:
        poller = client._poller
        if poller is not None and sum(len(w) for w in poller._pending.values()) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the waits never started")


def test_aclose_ends_every_awaited_request_at_once(redis_url: str) -> None:
    async def main() -> list[BaseException | Any]:
        client = AsyncClient(redis_url=redis_url)
        sent = [await client.submit("ping") for _ in range(3)]  # no node: never resolves
        waits = [asyncio.create_task(client.wait(r, timeout=30)) for r in sent]
        waits.append(asyncio.create_task(client.execute("echo", {"a": 1}, timeout=30)))
        await _until_awaited(client, 4)
        await client.aclose()
        return await asyncio.wait_for(
            asyncio.gather(*waits, return_exceptions=True), PROMPTLY
        )  # fmt: skip

    outcomes = asyncio.run(main())
    assert [type(o) for o in outcomes] == [PoolUnavailable] * 4, outcomes
    assert all(o.reason == "closed" and "closed" in str(o) for o in outcomes)


def test_a_closed_client_refuses_every_call_and_closes_once(redis_url: str) -> None:
    async def main() -> dict[str, BaseException | Any]:
        client = AsyncClient(redis_url=redis_url)
        assert (await client.rollout_state())["percent"] == 0  # it works before
        await client.aclose()
        assert client.closed
        await client.aclose()  # a second close does nothing
        calls = {
            "execute": client.execute("ping"),
            "submit": client.submit("ping"),
            "wait": client.wait("0123456789abcdef"),
            "rollout_state": client.rollout_state(),
            "create_session": client.create_session(),
            "set_rollout": client.set_rollout(10, "after close"),
        }
        names = list(calls)
        got = await asyncio.gather(*calls.values(), return_exceptions=True)
        return dict(zip(names, got, strict=True))

    outcomes = asyncio.run(main())
    wrong = {k: repr(v) for k, v in outcomes.items() if not isinstance(v, PoolUnavailable)}
    assert wrong == {}
    assert {v.reason for v in outcomes.values()} == {"closed"}


def test_aclose_never_holds_the_loop(redis_url: str) -> None:
    async def main() -> tuple[float, float]:
        client = AsyncClient(redis_url=redis_url)
        # A thread of the client's in a blocking call (as a publish to a slow Redis).
        busy = asyncio.create_task(client._run(time.sleep, BLOCKING))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        worst = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal worst
            while not stop.is_set():
                before = loop.time()
                await asyncio.sleep(0.01)
                worst = max(worst, loop.time() - before - 0.01)

        ticking = asyncio.create_task(ticker())
        started = loop.time()
        await client.aclose()
        closed_after = loop.time() - started
        stop.set()
        await ticking
        await busy  # the call a thread had taken finishes normally
        return worst, closed_after

    worst, closed_after = asyncio.run(main())
    assert worst < MAX_LOOP_LAG, f"the loop was held {worst:.2f} s"
    assert closed_after >= BLOCKING * 0.5  # aclose() did wait for the busy thread


def test_a_poll_that_loses_its_connection_is_tried_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fetch = ResultPoller._fetch
    failures = {"left": 3}

    def flaky_fetch(self: ResultPoller, task_ids: list[str]) -> list[dict[str, Any] | None]:
        if failures["left"]:
            failures["left"] -= 1
            raise redis.ConnectionError("Connection closed by server.")
        return real_fetch(self, task_ids)

    monkeypatch.setattr(ResultPoller, "_fetch", flaky_fetch)

    async def main() -> Any:
        async with AsyncClient(redis_url=redis_url) as client:
            task_id = "poll-retried-0001"
            waiting = asyncio.create_task(client.wait(task_id, timeout=10))
            await _until_awaited(client, 1)
            key = client.sync.app.backend.get_key_for_task(task_id)
            meta = {"task_id": task_id, "status": states.SUCCESS, "result": {"x": 1}}
            store = redis.Redis.from_url(redis_url)
            await asyncio.to_thread(store.set, key, json.dumps(meta))
            store.close()
            return await asyncio.wait_for(waiting, PROMPTLY)

    assert asyncio.run(main()) == {"x": 1}
    assert failures["left"] == 0  # every failure was met, and polled past


def _subscriptions(client: AsyncClient) -> int:
    """Result channels the client's backends (one per thread) still subscribe to."""
    backends = {id(b): b for b in client._backends.values()}
    return sum(len(getattr(b.result_consumer, "subscribed_to", ())) for b in backends.values())


def test_waits_ended_or_cancelled_leave_no_subscription_while_results_are_held(
    redis_url: str,
) -> None:
    """Celery subscribes to a result's channel in the thread that sends the request; the
    client polls instead and unsubscribes when a wait ends. It used to unsubscribe on
    whichever thread ran that call — a no-op on any other — so every request whose
    result the caller still held (a list of them, a cancelled task's traceback) kept a
    Redis subscription."""

    async def main() -> tuple[int, int, int]:
        async with AsyncClient(redis_url=redis_url, max_threads=8) as client:
            sent = [await client.submit("ping") for _ in range(40)]  # no node: we answer
            subscribed = _subscriptions(client)
            store = redis.Redis.from_url(redis_url)
            backend = client.sync.app.backend
            for result in sent[:20]:
                meta = {"task_id": result.id, "status": states.SUCCESS, "result": 1}
                store.set(backend.get_key_for_task(result.id), json.dumps(meta))
            store.close()
            assert (
                await asyncio.gather(*(client.wait(r, timeout=10) for r in sent[:20])) == [1] * 20
            )
            cancelled = [asyncio.create_task(client.wait(r, timeout=30)) for r in sent[20:]]
            await _until_awaited(client, 20)
            for task in cancelled:
                task.cancel()
            await asyncio.gather(*cancelled, return_exceptions=True)
            left = _subscriptions(client)
            held = len(sent) + len(cancelled)  # every result and task still referenced
            return subscribed, left, held

    subscribed, left, held = asyncio.run(main())
    assert subscribed == 40 and held == 60
    assert left == 0


def test_a_call_still_queued_for_a_thread_at_aclose_gets_the_reason_not_a_cancel(
    redis_url: str,
) -> None:
    async def main() -> tuple[object, BaseException | object]:
        client = AsyncClient(redis_url=redis_url, max_threads=1)
        busy = asyncio.create_task(client._run(time.sleep, 0.5))  # the only thread
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(client.rollout_state())  # waits for that thread
        await asyncio.sleep(0.05)
        await client.aclose()  # drops the queued call
        done = await asyncio.gather(busy, queued, return_exceptions=True)
        return done[0], done[1]

    busy, queued = asyncio.run(main())
    assert busy is None  # the call a thread had taken ran to its end
    assert isinstance(queued, PoolUnavailable) and queued.reason == "closed", repr(queued)
