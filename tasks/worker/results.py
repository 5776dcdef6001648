"""The result backend: Celery's Redis backend, with a result consumer that outlives a
Redis restart (issue 9 item 6).

Waiting for results (``AsyncResult.get``) goes through one pub/sub connection per
process. Celery's consumer handles a short blip, but a restart longer than its retry
budget (20 retries, 1 s apart) breaks it for good:

- a subscribe or read that fails re-raises ``RuntimeError("... must be restarted")``
  into whichever caller is there (a ``submit``, a waiting ``get``), after blocking it
  for those 20 s, and leaves the consumer with no connection;
- the next ``submit`` then opens a new connection subscribed to *its* task only: every
  request subscribed before the restart never hears of its result — lost to its waiter.

and a ``get`` that begins while Redis is away raises a redis ``ConnectionError`` at once.

Here a failed reconnect is tried once, never raised, and never partial: the consumer
stays disconnected until a later attempt (at most every :data:`RECONNECT_EVERY`
seconds, made by whoever waits or subscribes) succeeds, and each successful reconnect
reads the stored result of every subscribed task (results stored while Redis was away
or while nobody listened) and subscribes them all again.

No raw redis or kombu error reaches whoever waits (:mod:`~snakepool.tasks.worker.unreachable`):
the handle every send returns (:class:`SnakepoolResult`, through :class:`SnakepoolCelery`)
raises typed errors from ``get``, ``state``, ``result``, ``ready``, ``forget`` and
``revoke`` (a wait that runs out is :class:`ResultTimeout`), and a raw error stored as a
request's outcome (by a node older than ``SnakepoolTask``'s mapping) is read back typed.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import redis
from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.backends.redis import ResultConsumer as CeleryResultConsumer
from celery.exceptions import BackendStoreError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from snakepool import errors
from snakepool.tasks.worker.result_script import (
    SCRIPTED_STORE_MAX_BYTES,
    STORE_SHA,
    STORE_UNLESS_SUCCESS,
)
from snakepool.tasks.worker.unreachable import typed_error, typed_errors

__all__ = [
    "RECONNECT_EVERY",
    "ResilientRedisBackend",
    "ResilientResultConsumer",
    "ResultRider",
    "ResultTimeout",
    "SnakepoolCelery",
    "SnakepoolResult",
    "backend_url",
    "result_timeout",
]

log = logging.getLogger("snakepool.results")

#: Seconds between two attempts to reconnect a result consumer whose Redis is away.
RECONNECT_EVERY = 0.5
#: Where the error classes lived before everything moved under ``snakepool`` (issue 7).
#: A node of that layout (in a rolling deploy) stores its errors under these names, as do
#: results still in Redis: rebuilt as found, they would be Celery's stand-in classes
#: (``celery.exceptions.InvalidArguments``), no longer a ``SnakepoolError``.
_OLD_ERROR_MODULES = frozenset({"pool.errors", "pool.interpreter.adapter"})


class ResilientResultConsumer(CeleryResultConsumer):  # type: ignore[misc]
    """Celery's Redis result consumer, made to survive Redis restarts (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_attempt = 0.0

    def start(self, initial_task_id: str, **kwargs: Any) -> None:
        """First subscription, or the first after a failed reconnect: connect for every
        subscribed task, not only this one."""
        key = self._get_key_for_task(initial_task_id)
        with self._locked():
            self._pending_unsubscribe.discard(key)
            self.subscribed_to.add(key)
            self._try_reconnect(force=True)

    def _reconnect(self) -> None:
        """Called by Celery when a pub/sub operation failed: one attempt, never raising."""
        self._try_reconnect(force=True)

    def _try_reconnect(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now < self._next_attempt:
            return False
        self._next_attempt = now + RECONNECT_EVERY
        try:
            self._reconnect_pubsub()  # reads every subscribed result, then subscribes all
        except self._connection_errors as exc:
            self._pubsub = None  # whole or nothing: the next attempt starts afresh
            log.warning("result consumer: Redis unreachable (%s); reconnecting later", exc)
            return False
        return True

    def _reconnect_pubsub(self) -> None:
        """Celery's reconnect, then a second read of what is still awaited.

        Celery reads every subscribed result and only then subscribes again: a result
        stored in between (a task finishing just as Redis came back) was neither read
        nor published to this consumer, and its ``get`` waited out its timeout — a
        ``ResultTimeout`` for a request that had succeeded. Read once subscribed, a result
        is either in this read or in a message that follows it (a duplicate of one
        already taken is harmless: Celery keeps the first).
        """
        super()._reconnect_pubsub()
        with self._locked():
            keys = sorted(self.subscribed_to - self._pending_unsubscribe)
            if not keys:
                return
            for meta in self.backend.client.mget(keys):
                if meta:
                    self.on_state_change(self._decode_result(meta), None)

    def on_wait_for_pending(self, result: Any, **kwargs: Any) -> None:
        """A ``get`` begins by reading the stored result; with Redis away that read is
        skipped (it used to raise a redis ``ConnectionError`` into ``get``): the wait
        goes on, and the reconnect rereads every subscribed result."""
        try:
            super().on_wait_for_pending(result, **kwargs)
        except (*self._connection_errors, errors.PoolUnavailable) as exc:  # typed by the handle
            log.debug("result of %s not read yet: %s", getattr(result, "id", "?"), exc)

    def drain_events(self, timeout: float | None = None) -> None:
        """Wait for result messages; while disconnected, try to reconnect instead."""
        with self._locked():
            disconnected = self._pubsub is None and bool(self.subscribed_to)
            if disconnected and self._try_reconnect():
                return  # reconnected: stored results were read; the caller re-checks
        if disconnected:
            time.sleep(min(timeout or RECONNECT_EVERY, RECONNECT_EVERY))
            return
        super().drain_events(timeout=timeout)


class ResultRider(Protocol):
    """Commands to store in the same transaction as a result (a worker node's batched
    lane metrics, ``BatchedLaneMetrics``), set as ``app.snakepool_result_rider``."""

    def take_commands(self) -> list[tuple[object, ...]]:
        """The commands to send now ([] when none), handed over: sent once."""

    def sent(self) -> None:
        """The transaction that carried them is done (executed, refused or failed)."""

    def refused(self, error: redis.RedisError) -> None:
        """Redis refused one of them (the result itself was stored)."""


class ResilientRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend with :class:`ResilientResultConsumer`, storing a
    result and its node's :class:`ResultRider` commands in one ``MULTI``."""

    ResultConsumer = ResilientResultConsumer

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Celery's (connection errors), and Redis at ``maxmemory`` refusing the write:
        with ``result_backend_always_retry`` (nodes) the outcome is stored once memory
        frees, within the retry budget, instead of being dropped — a caller waiting for
        ever (DESIGN.md §8)."""
        return isinstance(exc, redis.exceptions.OutOfMemoryError) or bool(
            super().exception_safe_to_retry(exc)
        )

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's, with its read of the stored outcome moved into the transaction that
        stores (:data:`STORE_UNLESS_SUCCESS`): one round trip per outcome, not two —
        up to :data:`SCRIPTED_STORE_MAX_BYTES`; a larger one is read first, as Celery does.

        Raises:
            BackendStoreError: the encoded outcome is over Celery's size limit for Redis.
            redis.RedisError: it could not be stored (after Celery's retry policy).
        """
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)  # fmt: skip
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        # result_failure_expires: Celery 5.7's; earlier ones keep failures as long.
        expires = getattr(self, "failure_expires", None) if state == states.FAILURE else None
        key = self.get_key_for_task(task_id)
        if len(value) > SCRIPTED_STORE_MAX_BYTES:
            if self._get_task_meta_for(task_id)["status"] == states.SUCCESS:
                return result
            self.ensure(self._set, (key, value, expires))
        else:
            self.ensure(self._set, (key, value, expires, True))
        return result

    def _set(
        self, key: str, value: Any, expires: int | None = None, keep_success: bool = False
    ) -> None:
        """Celery's ``SET … EX`` + ``PUBLISH`` of a result, in a ``MULTI`` that also carries
        what the app's rider has (a lane's figures: no round trip of their own, and in
        Redis the moment the result is). A refused rider command never fails the store.
        ``keep_success``: a task's outcome, written only if no SUCCESS is stored.

        Raises:
            redis.RedisError: the result could not be stored (Celery's retry policy); the
                rider is told (``refused``): its commands are not sent again.
        """
        rider: ResultRider | None = getattr(self.app, "snakepool_result_rider", None)
        if rider is None:
            self._store(key, value, expires, [], keep_success)
            return
        commands: list[tuple[object, ...]] = []
        try:
            commands = rider.take_commands()
            replies = self._store(key, value, expires, commands, keep_success)
        except redis.RedisError as exc:  # Celery retries the result, not what rode
            if commands:
                rider.refused(exc)  # lost (it may have run); its window TTLs redone
            raise
        finally:
            rider.sent()
        refused = next((r for r in replies if isinstance(r, redis.RedisError)), None)
        if refused is not None:
            rider.refused(refused)

    def _store(
        self,
        key: str,
        value: Any,
        expires: int | None,
        commands: list[tuple[object, ...]],
        keep_success: bool,
    ) -> list[Any]:
        """``commands``, then the result's ``SET`` and ``PUBLISH`` (through
        :data:`STORE_UNLESS_SUCCESS` when ``keep_success``), in one ``MULTI``; the
        replies to ``commands`` (a refused command's error in its place).

        Raises:
            redis.RedisError: the transaction failed, or the result's own commands were
                refused.
        """
        expires = self.expires if expires is None else expires
        seconds = int(expires) if expires else None  # Celery's may be a float
        own = 1 if keep_success else 2
        script_args = (1, key, value, "" if seconds is None else seconds)  # keep_success's
        with self.client.pipeline() as pipe:
            for command in commands:
                pipe.execute_command(*command)
            if keep_success:
                pipe.evalsha(STORE_SHA, *script_args)
            else:
                pipe.set(key, value, ex=seconds)
                pipe.publish(key, value)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        if keep_success and isinstance(replies[-1], redis.exceptions.NoScriptError):
            # Redis lost its scripts (a restart, SCRIPT FLUSH): EVAL loads it as it runs.
            replies[-1] = self.client.eval(STORE_UNLESS_SUCCESS, *script_args)
        for reply in replies[-own:]:  # the result's own
            if isinstance(reply, Exception):
                raise reply
        return replies[:-own]

    def exception_to_python(self, exc: Any) -> Any:
        """A stored outcome as an exception: a raw redis/kombu/socket one (stored by a
        node that did not type it) comes back typed, the rebuilt raw one as its cause;
        one of the error tree stored under its module's name before the one import
        package (``pool.errors``) comes back as the same class of :mod:`snakepool.errors`."""
        if (
            isinstance(exc, dict)
            and exc.get("exc_module") in _OLD_ERROR_MODULES
            and exc.get("exc_type") in errors.__all__
        ):
            exc = {**exc, "exc_module": errors.__name__}
        rebuilt = super().exception_to_python(exc)
        typed = typed_error(rebuilt, "the request's node") if rebuilt is not None else None
        if typed is None:
            return rebuilt
        typed.__cause__ = rebuilt
        return typed


class ResultTimeout(errors.ResultTimeout, CeleryTimeoutError):  # type: ignore[misc]
    """:class:`snakepool.errors.ResultTimeout`, and Celery's ``TimeoutError`` — what
    ``AsyncResult.get`` and the clients raised before, so a caller catching that keeps
    catching it."""


def result_timeout(task_id: str, waited: float, command: str | None = None) -> ResultTimeout:
    """The error for request ``task_id`` whose result did not come within ``waited`` s."""
    what = f"{command[:80]!r} (task {task_id})" if command is not None else f"task {task_id}"
    return ResultTimeout(
        f"no result for {what} within {waited:g} s; it may still run and its result come "
        "later: are worker nodes running? (snakepool status)",
        task_id=task_id,
        timeout=waited,
    )


class SnakepoolResult(AsyncResult):  # type: ignore[misc]
    """Celery's ``AsyncResult``, raising only typed errors (the handle ``submit`` returns).

    Redis unreachable while reading is ``PoolUnavailable`` (``reason="unreachable"``);
    a ``get`` whose ``timeout`` runs out is :class:`ResultTimeout` (also Celery's
    ``TimeoutError``). Every property reading the stored outcome (``state``, ``result``,
    ``info``, ``ready()``, ``queue``, …) goes through ``_get_task_meta``.
    """

    def get(self, timeout: float | None = None, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``get``, typed.

        Raises:
            ResultTimeout: no result within ``timeout`` seconds (the request may still
                run; its result may come later).
            PoolUnavailable: Redis unreachable (``reason="unreachable"``).
            SnakepoolError: the request's own typed error.
        """
        with typed_errors(f"waiting for the result of task {self.id}"):
            try:
                return super().get(timeout, *args, **kwargs)
            except CeleryTimeoutError as exc:
                if isinstance(exc, errors.SnakepoolError) or timeout is None:
                    raise
                raise result_timeout(self.id, timeout) from None

    wait = get

    def _get_task_meta(self) -> Any:
        with typed_errors(f"reading the result of task {self.id}"):
            return super()._get_task_meta()

    def forget(self) -> None:
        """Celery's ``forget``, typed (``PoolUnavailable`` when Redis is unreachable)."""
        with typed_errors(f"forgetting the result of task {self.id}"):
            super().forget()

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        """Celery's ``revoke``, typed (``PoolUnavailable`` when the broker is unreachable)."""
        with typed_errors(f"revoking task {self.id}"):
            super().revoke(*args, **kwargs)


class SnakepoolCelery(Celery):  # type: ignore[misc]
    """A Celery app whose every send returns a :class:`SnakepoolResult`."""

    @cached_property  # type: ignore[untyped-decorator]
    def AsyncResult(self) -> type[SnakepoolResult]:
        """The result class, bound to this app."""
        return self.subclass_with_self(SnakepoolResult, reverse="AsyncResult")  # type: ignore[no-any-return]


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` value that stores results in ``redis_url`` with this backend
    (Celery's ``module:Class+url`` form)."""
    return f"{__name__}:{ResilientRedisBackend.__name__}+{redis_url}"
