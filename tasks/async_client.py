"""The asyncio client: :class:`~snakepool.tasks.client.Client`'s methods, awaitable.

::

    from snakepool import AsyncClient

    async with AsyncClient() as client:                  # settings from SNAKEPOOL_* env
        await client.execute("calculate", {"expression": "6 * 7"})   # {"result": 42}
        sid = await client.create_session()
        result = await client.submit("ping", session_id=sid)          # a Celery AsyncResult
        await client.wait(result)                                     # {"pong": True, ...}

Celery has no asyncio API, so nothing here blocks the event loop:

- every blocking call (publishing a message, a Redis command) runs in a **bounded**
  thread pool of the client's own (``max_threads``), never the loop's default one;
- results are **polled asynchronously** (:mod:`~snakepool.tasks.result_poller`): one
  ``MGET`` per tick for every awaited result, holding no thread while they wait; while
  Redis is unreachable the poller keeps trying (a restart: results are stored once it
  is back), and a wait that runs out meanwhile is ``ResultTimeout``, the outage its cause.

Closing (``aclose()``, or leaving ``async with``) ends every awaited request at once with
``PoolUnavailable`` (``reason="closed"``) and refuses every later call the same way.

Errors are the same typed exceptions as :class:`~snakepool.tasks.client.Client`'s — never
a raw redis, kombu or socket error (``PoolUnavailable`` when Redis is unreachable) — args
Celery's JSON cannot carry and a bad wait ``timeout`` are ``InvalidArguments`` before
anything is sent; a result not there in time is :class:`~snakepool.errors.ResultTimeout`
(also the builtin and Celery's ``TimeoutError``), as with ``Client.execute``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Self, TypeVar

from celery import states
from celery.result import AsyncResult

from snakepool.config import Settings
from snakepool.config.timeouts import checked_timeout
from snakepool.errors import PoolUnavailable
from snakepool.tasks import after_fork
from snakepool.tasks.client import Client
from snakepool.tasks.client_errors import checked_flags_wait, checked_threads
from snakepool.tasks.result_poller import ResultPoller
from snakepool.tasks.v2_api import anonymous_options
from snakepool.tasks.worker.node import live_nodes
from snakepool.tasks.worker.unreachable import typed_errors

__all__ = ["DEFAULT_THREADS", "MAX_THREADS", "AsyncClient", "AsyncV2Api"]

#: Threads for the blocking calls of one client (publishing, Redis).
DEFAULT_THREADS = 16
#: The most threads one client may have.
MAX_THREADS = 1024

T = TypeVar("T")


class AsyncClient:
    """:class:`~snakepool.tasks.client.Client`, awaitable (see the module docstring).

    Args:
        redis_url: SessionStore / flags Redis (default: ``REDIS_URL``).
        broker_url: Celery broker (default: ``BROKER_URL``, else ``redis_url``).
        routing: ``"router"`` (through the router task) or ``"direct"`` (zero hops).
        settings: Use these settings instead of reading the environment.
        max_threads: Threads for blocking calls (the bound on what runs at once): a
            whole number from 1 to ``MAX_THREADS`` (None: ``DEFAULT_THREADS``).

    Raises:
        InvalidArguments: an unknown ``routing``, or ``max_threads`` not a whole number
            from 1 to ``MAX_THREADS`` (nothing connects).
        ConfigError: invalid settings.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        broker_url: str | None = None,
        routing: str = "router",
        *,
        settings: Settings | None = None,
        max_threads: int | None = DEFAULT_THREADS,
    ) -> None:
        self._threads = threads = checked_threads(max_threads, DEFAULT_THREADS, MAX_THREADS)
        self.sync = Client(redis_url, broker_url, routing, settings=settings)
        self.settings = self.sync.settings
        self.routing = routing
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="snakepool-async")
        # Celery keeps one result backend per thread (each with its own pub/sub
        # connection): every one our threads used is closed by aclose().
        self._backends: dict[int, Any] = {}
        self._poller: ResultPoller | None = None
        self._closed = False
        self.v2 = AsyncV2Api(self)
        after_fork.renew_after_fork(self)  # gunicorn --preload: see tasks.after_fork

    def _after_fork(self) -> None:
        """In a forked child: threads, poller and backends of its own (see tasks.after_fork)."""
        after_fork.keep_inherited(self._executor, self._poller, dict(self._backends))
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="snakepool-async")
        self._poller, self._backends = None, {}

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (every call then is ``PoolUnavailable``)."""
        return self._closed

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise _closed_error()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, partial(self._in_thread, fn, *args, **kwargs)
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.closed and task is not None and not task.cancelling():
                # aclose() dropped this call before a thread took it: nobody cancelled
                # the caller, so it gets the reason, not a CancelledError.
                raise _closed_error() from None
            raise

    def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Every blocking call runs here: the one place its raw redis/kombu/socket errors
        become typed ones (``PoolUnavailable`` when Redis is unreachable)."""
        try:
            with typed_errors(getattr(fn, "__qualname__", "a blocking call")):
                return fn(*args, **kwargs)
        finally:
            backend = self.sync.app.backend  # this thread's
            self._backends[id(backend)] = backend

    # ------------------------------------------------------------------ requests

    async def decide(
        self, command: str, args: dict[str, Any] | None = None, session_id: str | None = None
    ) -> str:
        """The lane the router would pick for this request now: ``v3`` or ``v2compat``."""
        return await self._run(self.sync.decide, command, args, session_id)

    async def submit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue one request; its Celery AsyncResult (await :meth:`wait` for the result).

        Raises:
            InvalidArguments: as :meth:`Client.submit <snakepool.tasks.client.Client.submit>`.
        """
        return await self._run(self.sync.submit, command, args, session_id=session_id, **options)

    async def wait(self, result: AsyncResult | str, timeout: float | None = None) -> Any:
        """The result of a submitted request (or raise its typed error), without blocking.

        Args:
            result: What :meth:`submit` returned, or its id.
            timeout: Seconds to wait (default ``RESULT_TIMEOUT``): a number above 0 and
                at most 86400.

        Raises:
            InvalidArguments: a bad ``timeout`` (nothing is awaited).
            ResultTimeout: no result in time (the request may still run).
            SnakepoolError: the request's own typed error.
        """
        wait = self.settings.result_timeout if timeout is None else checked_timeout(timeout)
        task_id = result if isinstance(result, str) else result.id
        if self._poller is None or self._poller.loop is not asyncio.get_running_loop():
            self._poller = ResultPoller(self.sync, self._run)
        if self._closed:
            raise _closed_error()
        try:
            meta = await self._poller.wait(task_id, wait)
        finally:
            # Celery subscribed to the result's channel when the request was sent; we
            # polled instead: unsubscribe, or every request sent leaves a subscription
            # (once closed, aclose() has closed every backend, subscriptions and all).
            if not self._closed:
                await self._run(_unsubscribe, self.sync, result)
        if meta["status"] == states.SUCCESS:
            return meta["result"]
        if isinstance(meta.get("result"), BaseException):
            raise meta["result"]
        # Revoked and other ready states: let Celery raise what it raises for them.
        return await self._run(self.sync.app.AsyncResult(task_id).get, timeout=5)

    async def execute(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """Run one request and return its result (or raise its typed error).

        Args:
            timeout: Seconds to wait for the result (default ``RESULT_TIMEOUT``): a
                number above 0 and at most 86400, checked before anything is sent.
            options: As :meth:`Client.execute <snakepool.tasks.client.Client.execute>`.

        Raises:
            InvalidArguments: as :meth:`submit`, or a bad ``timeout`` — nothing is sent.
            ResultTimeout: no result within ``timeout`` (the request may still run).
            SnakepoolError: the request's own typed error.
        """
        if timeout is not None:
            timeout = checked_timeout(timeout)
        result = await self.submit(command, args, session_id=session_id, **options)
        return await self.wait(result, timeout)

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, ttl: int | None = None, metadata: dict[str, Any] | None = None
    ) -> str:
        """Create a session; returns its id."""
        return await self._run(self.sync.create_session, ttl, metadata)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session (with its program ids), or None."""
        return await self._run(self.sync.get_session, session_id)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session and its programs."""
        return await self._run(self.sync.delete_session, session_id)

    # ------------------------------------------------------------------- rollout

    async def rollout_state(self) -> dict[str, Any]:
        """The current rollout flags."""
        return await self._run(self.sync.rollout_state)

    async def set_rollout(self, percent: int, reason: str) -> dict[str, Any]:
        """Send ``percent`` % of sessions to V3."""
        return await self._run(self.sync.set_rollout, percent, reason)

    async def set_shadow(self, enabled: bool, rate: float | None = None) -> dict[str, Any]:
        """Turn shadow comparison on or off (``rate``: share of read-only requests)."""
        return await self._run(self.sync.set_shadow, enabled, rate)

    async def rollback(self, reason: str) -> dict[str, Any]:
        """Send all traffic back to V2-compat now (seen everywhere within a second)."""
        return await self._run(self.sync.rollback, reason)

    async def wait_for_flags(self, version: int, timeout: float = 5.0) -> None:
        """Until every live node routes by flags ``version`` or newer (polled, not blocked).

        Raises:
            InvalidArguments: ``version`` not an int, or ``timeout`` not a number of
                seconds in (0, 86400].
            PoolUnavailable: not every node caught up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + checked_flags_wait(version, timeout)
        while True:
            nodes = await self._run(live_nodes, self.sync.redis, self.sync.keys)
            behind = [n["name"] for n in nodes if n.get("flags_version", -1) < version]
            if nodes and not behind:
                return
            if time.monotonic() > deadline:
                raise PoolUnavailable(
                    f"nodes still routing by older flags than version {version}: "
                    f"{behind or 'no live nodes'}"
                )
            await asyncio.sleep(0.05)  # heartbeats are in Redis: nothing to wait on

    # ----------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Stop polling, release connections and the threads; a second call does nothing.

        Every request still awaited (``execute``, ``wait``) gets ``PoolUnavailable`` at
        once (it may still run: closing the client does not revoke it), and so does every
        later call. The loop is never held: the threads are joined in another thread.
        """
        if self._closed:
            return
        self._closed = True
        after_fork.forget(self)
        if self._poller is not None:
            await self._poller.close(_closed_error)
            self._poller = None
        # Not on the loop: a thread may be in a blocking call (a slow Redis) for seconds.
        # Nor in the loop's default executor: this client never uses that one.
        loop = asyncio.get_running_loop()
        released: asyncio.Future[None] = loop.create_future()

        def release() -> None:
            try:
                self._release()
            except BaseException as exc:  # handed to the awaiting aclose()
                loop.call_soon_threadsafe(_settle, released, exc)
            else:
                loop.call_soon_threadsafe(_settle, released, None)

        threading.Thread(target=release, name="snakepool-async-close", daemon=True).start()
        await released

    def _release(self) -> None:
        after_fork.forget(self)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.sync.close()
        for backend in self._backends.values():
            _close_backend(backend)
        self._backends.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the awaiting aclose() was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _closed_error() -> PoolUnavailable:
    return PoolUnavailable(
        "this AsyncClient is closed (aclose() was called): make a new one",
        reason="closed",
    )


def _close_backend(backend: Any) -> None:
    """Close one result backend's connections (pub/sub included)."""
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None and hasattr(consumer, "stop"):
        consumer.stop()
    pool = getattr(getattr(backend, "client", None), "connection_pool", None)
    if pool is not None:
        pool.disconnect()


def _unsubscribe(client: Client, result: AsyncResult | str) -> None:
    if isinstance(result, str):
        result = AsyncResult(result, app=client.app)
    # The backend that subscribed: the one of the thread that sent the request (Celery
    # keeps one per thread), not this thread's — there it would be a silent no-op and the
    # subscription would stay for as long as the caller holds the result. Celery makes
    # this safe from any thread (AsyncResult.__del__ does the same).
    remove = getattr(result.backend, "remove_pending_result", None)
    if remove is not None:  # Redis backend (results pushed); the embedded one has none
        remove(result)


class AsyncV2Api:
    """The V2 API, awaitable (deprecated: use :class:`AsyncClient`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def execute_in_session(
        self, session_id: str, command: str, args: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """V2's ``execute_in_session``; use ``AsyncClient.execute(..., session_id=...)``."""
        warnings.warn(
            "client.v2.execute_in_session is deprecated; use AsyncClient.execute(session_id=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self._client.execute(command, args, session_id=session_id, **options)

    async def execute_anonymous(
        self, command: str, args: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """V2's ``execute_anonymous``; use ``AsyncClient.execute`` (``options`` as there)."""
        warnings.warn(
            "client.v2.execute_anonymous is deprecated; use AsyncClient.execute",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self._client.execute(command, args, **anonymous_options(options))
