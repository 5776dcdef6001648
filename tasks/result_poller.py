"""Waiting for many results at once without blocking the event loop (:class:`AsyncClient
<snakepool.tasks.async_client.AsyncClient>`'s ``wait``).

One task per client and event loop fetches every awaited result with one ``MGET`` per
tick, in the client's thread pool, starting every 2 ms and backing off to 50 ms while
nothing arrives: a thousand awaited requests cost one Redis round trip per tick and hold
no thread while they wait. While Redis is unreachable (a restart) the poller keeps
trying — results are stored once it is back — and a wait that runs out meanwhile is
``ResultTimeout`` with the outage (``PoolUnavailable``) as its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import states

from snakepool.errors import PoolUnavailable
from snakepool.tasks.client_errors import result_timeout

if TYPE_CHECKING:
    from snakepool.tasks.client import Client

__all__ = ["POLL_FIRST", "POLL_LONGEST", "ResultPoller"]

#: First and longest pause between two polls of the awaited results, in seconds.
POLL_FIRST, POLL_LONGEST = 0.002, 0.05


class ResultPoller:
    """Waits for many task results at once: one ``MGET`` per tick, in the thread pool."""

    def __init__(self, client: Client, blocking: Callable[..., Any]) -> None:
        self._backend = client.app.backend
        self._blocking = blocking
        #: The loop this poller serves (a client used from another loop gets another).
        self.loop = asyncio.get_running_loop()
        self._pending: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Why the last poll failed, while Redis is unreachable (else None).
        self.unreachable: PoolUnavailable | None = None
        #: Set by :meth:`close`: the polling task ends at its next step.
        self._closed = False

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        """The task's ready meta-data (``status``, ``result``: an exception on failure)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(task_id, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="snakepool-result-poller")
        self._wake.set()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise result_timeout(task_id, timeout) from self.unreachable
        finally:
            waiting = self._pending.get(task_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._pending.pop(task_id, None)

    def _fetch(self, task_ids: list[str]) -> list[dict[str, Any] | None]:
        """Each task's decoded meta-data, or None (runs in the thread pool: decoding a
        large result must not hold the loop either)."""
        keys = [self._backend.get_key_for_task(task_id) for task_id in task_ids]
        try:
            found = self._backend.mget(keys)
        except NotImplementedError:  # a backend without MGET: one GET each
            found = [self._backend.get(key) for key in keys]
        if isinstance(found, dict):  # the cache backend (embedded mode) answers a dict
            found = [found.get(key) for key in keys]
        return [self._backend.decode_result(raw) if raw else None for raw in found]

    async def _run(self) -> None:
        pause = POLL_FIRST
        while not self._closed:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                pause = POLL_FIRST
                continue  # closed meanwhile, or a waiter came: look again
            task_ids = list(self._pending)
            try:
                raw = await self._blocking(self._fetch, task_ids)
            except PoolUnavailable as exc:
                # Redis away (a restart): the results are stored once it is back, as the
                # sync client's wait rides it out; a waiter whose time runs out first gets
                # ResultTimeout with this as its cause.
                self.unreachable = exc
                await asyncio.sleep(POLL_LONGEST)
                continue
            except Exception as exc:  # typed already (``_blocking``): every waiter gets it
                for futures in self._pending.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                self._pending.clear()
                continue
            self.unreachable = None
            resolved = False
            for task_id, meta in zip(task_ids, raw, strict=True):
                if meta is None or meta.get("status") not in states.READY_STATES:
                    continue
                resolved = True
                for future in self._pending.pop(task_id, []):
                    if not future.done():
                        future.set_result(meta)
            self._wake.clear()
            pause = POLL_FIRST if resolved else min(POLL_LONGEST, pause * 2)
            # A new waiter wakes the poller early (its result may already be there).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            if self._wake.is_set():
                pause = POLL_FIRST

    async def close(self, error: Callable[[], BaseException]) -> None:
        """Stop polling; every waiter still waiting gets ``error()`` at once.

        The polling task is cancelled *and* told to stop: on Python 3.11 a cancellation
        that meets ``wait_for``'s own timeout can be swallowed (fixed in 3.12), and a
        poller that missed it went on to wait for the next waiter for ever, holding
        ``close`` (and ``AsyncClient.aclose``) with it.
        """
        self._closed = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            self._wake.set()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: a poll that failed on the way out says no more
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error())
        self._pending.clear()
