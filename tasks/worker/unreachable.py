"""Redis, the broker or a socket failing, as the typed errors a caller gets (issue 9 item 6).

No raw redis-py, kombu or socket exception reaches a caller of the public API: each is
mapped to the :mod:`snakepool.errors` tree, with the raw one as its ``__cause__``:

- a lost connection, a refused connect, a time-out, Redis still loading its data after a
  restart → :class:`~snakepool.errors.PoolUnavailable` (``reason="unreachable"``,
  retryable);
- any other redis or kombu error (a command refused: ``READONLY``, ``OOM``, ``MISCONF``,
  a reply that cannot be read) → :class:`~snakepool.errors.SnakepoolError` (category
  ``internal``, not retryable; ``reason`` names the raw type).

The mapping is applied once per boundary, each in one place:

=========================================  ====================================================
what the caller touches                    where
=========================================  ====================================================
a request's stored outcome (a task raised)  ``SnakepoolTask`` (:mod:`~snakepool.tasks.worker.app`),
                                           the base of every snakepool task
a stored outcome read back                 ``ResilientRedisBackend.exception_to_python``
                                           (:mod:`~snakepool.tasks.worker.results`): raw ones
                                           stored by an older node
the handle ``submit`` returns              ``SnakepoolResult`` (``get``, ``state``,
                                           ``result``, ``ready``, ``forget``, ``revoke``, …)
``Client``'s methods                        :func:`typed_methods` on the class
``AsyncClient``'s blocking calls           its one thread-pool entry (``_in_thread``)
=========================================  ====================================================
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from kombu.exceptions import KombuError, OperationalError

from snakepool.errors import PoolUnavailable, SnakepoolError

__all__ = ["RAW_ERRORS", "UNREACHABLE", "typed_error", "typed_errors", "typed_methods"]

#: What Redis, the broker or the network being away raises (redis-py, kombu, sockets);
#: redis-py's ``BusyLoadingError`` (Redis loading its data after a restart) is one.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    ConnectionError,
    TimeoutError,
)
#: Every raw error of the libraries under the client: none reaches a caller as it is.
RAW_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, KombuError, *UNREACHABLE)

C = TypeVar("C", bound=type)


def typed_error(exc: BaseException, doing: str) -> SnakepoolError | None:
    """The typed error for raw ``exc`` (None: ``exc`` is ours already, or not a raw one).

    Args:
        exc: What a redis, kombu or socket call raised.
        doing: What was being done, for the message (``"creating a session"``).

    Returns:
        ``PoolUnavailable(reason="unreachable")`` for a connection lost, refused or timed
        out; ``SnakepoolError(reason=<raw type>)`` for any other redis or kombu error.
        The caller chains ``exc`` as its cause.
    """
    if isinstance(exc, SnakepoolError) or not isinstance(exc, RAW_ERRORS):
        return None
    if isinstance(exc, UNREACHABLE):
        return PoolUnavailable(
            f"{doing}: Redis or the broker unreachable: {exc}"[:500], reason="unreachable"
        )
    raw = f"{type(exc).__module__}.{type(exc).__name__}"
    return SnakepoolError(f"{doing}: Redis or the broker refused: {exc}"[:500], reason=raw)


@contextlib.contextmanager
def typed_errors(doing: str) -> Iterator[None]:
    """Raise a raw redis/kombu/socket error of the block as its typed error (cause chained).

    Raises:
        PoolUnavailable: Redis or the broker unreachable (``reason="unreachable"``).
        SnakepoolError: another redis or kombu error (``reason`` names it).
    """
    try:
        yield
    except RAW_ERRORS as exc:
        typed = typed_error(exc, doing)
        if typed is None:
            raise
        raise typed from exc


def typed_methods(cls: C) -> C:
    """Class decorator: every public method of ``cls`` (its own, not inherited) raises
    typed errors only (:func:`typed_errors`), so a client class needs no ``try`` of its
    own per method. Coroutine functions are left alone (an async class maps where it
    runs blocking calls)."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        if inspect.iscoroutinefunction(member):
            continue
        setattr(cls, name, _typed_method(member, f"{cls.__name__}.{name}"))
    return cls


def _typed_method(method: Callable[..., Any], doing: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def typed(*args: Any, **kwargs: Any) -> Any:
        with typed_errors(doing):
            return method(*args, **kwargs)

    return typed
