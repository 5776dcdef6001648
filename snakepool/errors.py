"""The snakepool exception tree.

Every error the pool (and later the lanes) raises derives from :class:`SnakepoolError`
and carries data rather than only a message: a ``category`` that says whose fault it
is, whether it is ``retryable``, and fields such as ``exit_code`` or
``remote_traceback``. ``category == "client"`` marks errors caused by the request
itself; those never count toward a lane's error rate.

Errors cross process boundaries as plain data, never pickled: ``args`` is always
``(message, data)``, so Celery's JSON result backend (which stores ``exc.args`` and
rebuilds ``cls(*args)``) hands the caller the same type with the same data; elsewhere
:meth:`SnakepoolError.to_dict` / :func:`error_from_dict`.
"""

from __future__ import annotations

import signal as _signal
from typing import Any, ClassVar

__all__ = [
    "CommandFailed",
    "ConfigError",
    "DeadLettered",
    "InvalidArguments",
    "PayloadTooLarge",
    "PoolUnavailable",
    "ProgramNotFound",
    "QueueFull",
    "QueueTimeout",
    "RequestTimeout",
    "ResultTimeout",
    "SessionNotFound",
    "SnakepoolError",
    "StaleFence",
    "UnknownCommand",
    "WorkerCrashed",
    "error_class",
    "error_from_dict",
]


class SnakepoolError(Exception):
    """Root of every snakepool error.

    Args:
        message: Human-readable description.
        data: Structured details as one dict (how Celery passes them back).
        **fields: More details (JSON-able); all are attributes and in ``data``.
    """

    #: Whose fault: ``client`` (the request), ``capacity``, ``timeout``, ``worker``,
    #: ``command`` (the user's code raised), ``unavailable``, ``config``, ``conflict``
    #: (another writer holds the right to change it), ``internal``.
    category: ClassVar[str] = "internal"
    #: Whether sending the same request again may succeed (only ever done for
    #: idempotent commands).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", data: dict[str, Any] | None = None, /, **fields: Any):
        merged = {**(data or {}), **fields}
        super().__init__(message, merged)
        self.message = message
        self.data: dict[str, Any] = merged

    def __str__(self) -> str:
        return self.message

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found normally: expose the data fields.
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(name)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep data across copy.copy / deepcopy (pickle is never used on the wire).
        return (_rebuild, (type(self).__name__, self.message, self.data))

    @property
    def is_client_error(self) -> bool:
        """True when the request itself was at fault (never counted against a lane)."""
        return self.category == "client"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form that :func:`error_from_dict` turns back into this error."""
        return {"type": type(self).__name__, "message": self.message, "data": dict(self.data)}


class QueueFull(SnakepoolError):
    """Every interpreter is busy and the wait queue is at ``max_queue``."""

    category = "capacity"
    retryable = True


class QueueTimeout(SnakepoolError):
    """No interpreter became free within ``queue_timeout`` seconds."""

    category = "capacity"
    retryable = True


class RequestTimeout(SnakepoolError):
    """The command ran past its timeout; its interpreter was killed and replaced."""

    category = "timeout"
    retryable = True


class ResultTimeout(SnakepoolError, TimeoutError):
    """No result within the caller's wait (``Client.execute``, ``AsyncClient.wait``).

    Raised by the client, never stored: the request was sent and may still run, so its
    result may yet arrive (wait again for ``task_id``); sending it again could run it
    twice, hence not ``retryable``. A wait timeout the caller got wrong (``-1``, ``inf``,
    ``"5"``) is ``InvalidArguments`` instead, raised before anything is sent. Also the
    builtin ``TimeoutError``, so ``except TimeoutError`` catches it.

    Data: ``task_id``, ``timeout`` (seconds waited).
    """

    category = "timeout"

    def __init__(self, message: str = "", data: dict[str, Any] | None = None, /, **fields: Any):
        super().__init__(message, data, **fields)
        # OSError would read (message, data) as (errno, strerror): it has neither.
        self.errno = self.strerror = None


class WorkerCrashed(SnakepoolError):
    """The interpreter died while handling the request.

    Data: ``exit_code`` (int or None), ``signal`` (signal number or None),
    ``signal_name``, ``reason``, ``pid``.
    """

    category = "worker"
    retryable = True


class PoolUnavailable(SnakepoolError):
    """The pool cannot serve: stopped, starting, or backing off after crash loops.

    Data: ``retry_after`` (seconds) when known.
    """

    category = "unavailable"
    retryable = True


class UnknownCommand(SnakepoolError):
    """The adapter has no command of that name."""

    category = "client"


class InvalidArguments(SnakepoolError):
    """The arguments were rejected before or by the command."""

    category = "client"


class CommandFailed(SnakepoolError):
    """The command raised inside the interpreter; the interpreter is still up.

    Data: ``remote_type``, ``remote_traceback``.
    """

    category = "command"


class PayloadTooLarge(SnakepoolError):
    """A request or result exceeded ``max_message_bytes``.

    Data: ``size``, ``limit``, ``direction`` (``request`` or ``result``).
    """

    category = "client"


class SessionNotFound(SnakepoolError):
    """No session with that id (or it expired)."""

    category = "client"


class ProgramNotFound(SnakepoolError):
    """No program with that id in the session or interpreter."""

    category = "client"


class ConfigError(SnakepoolError):
    """A setting is invalid, or an adapter cannot be loaded.

    Data: ``setting`` naming the offending setting when there is one.
    """

    category = "config"


class DeadLettered(SnakepoolError):
    """The request killed the node running it ``POISON_THRESHOLD`` times and was set aside.

    A poison request: each delivery ended with its node's death, so it is kept in the
    dead-letter list (``snakepool deadletter show|retry``) rather than redelivered for
    ever. A client error: the request itself is at fault, so it never counts toward a
    lane's error rate (the nodes it killed already did).

    Data: ``task_id``, ``deliveries`` (how many ended with a node's death), ``nodes``
    (the nodes that died running it, oldest first), ``threshold``.
    """

    category = "client"


class StaleFence(SnakepoolError):
    """A change was refused: the fencing token it was made under is no longer current.

    A rollout controller acts only while it holds the controller lease; each acquisition
    gets a new, larger token, and its changes to the flags are written only if that
    token is still the current holder's (checked in the same transaction as the write).
    A controller that paused past its lease and woke after another took over gets this,
    and nothing is written.

    Data: ``token`` (the stale one), ``why`` (what no longer matched).
    """

    category = "conflict"


_BY_NAME: dict[str, type[SnakepoolError]] = {
    cls.__name__: cls
    for cls in (
        SnakepoolError,
        QueueFull,
        QueueTimeout,
        RequestTimeout,
        ResultTimeout,
        WorkerCrashed,
        PoolUnavailable,
        UnknownCommand,
        InvalidArguments,
        CommandFailed,
        PayloadTooLarge,
        SessionNotFound,
        ProgramNotFound,
        ConfigError,
        DeadLettered,
        StaleFence,
    )
}


def _rebuild(type_name: str, message: str, data: dict[str, Any]) -> SnakepoolError:
    return _BY_NAME.get(type_name, SnakepoolError)(message, **data)


def error_class(name: str) -> type[SnakepoolError] | None:
    """The class of the tree named ``name`` (``"QueueFull"``), or None for any other name."""
    return _BY_NAME.get(name)


def error_from_dict(payload: dict[str, Any]) -> SnakepoolError:
    """Rebuild an error from :meth:`SnakepoolError.to_dict` output (unknown types → root)."""
    data = payload.get("data") or {}
    return _rebuild(str(payload.get("type", "")), str(payload.get("message", "")), dict(data))


def describe_exit(status: int | None) -> tuple[int | None, int | None, str | None]:
    """Split a ``waitstatus_to_exitcode`` result into (exit_code, signal, signal_name)."""
    if status is None:
        return None, None, None
    if status < 0:
        try:
            name = _signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return None, -status, name
    return status, None, None
