"""Code that runs inside each interpreter. Needs only the standard library, msgpack and
:mod:`snakepool.errors` (dependency-free), so it can run under another Python executable.

Adapter authors use :func:`command` (and, for per-interpreter state, :class:`Adapter`)
and raise :class:`InvalidArguments` & co. (the one error tree of :mod:`snakepool.errors`)
to reject a request. A command that keeps state per session reads the request's scope
with :func:`current_session` (and must hold nothing when :func:`is_transient`).
"""

from snakepool.errors import (
    ConfigError,
    InvalidArguments,
    PayloadTooLarge,
    ProgramNotFound,
    SessionNotFound,
    SnakepoolError,
    UnknownCommand,
)
from snakepool.pool.interpreter.context import current_session, is_transient
from snakepool.pool.interpreter.marks import Adapter, command

__all__ = [
    "Adapter",
    "ConfigError",
    "InvalidArguments",
    "PayloadTooLarge",
    "ProgramNotFound",
    "SessionNotFound",
    "SnakepoolError",
    "UnknownCommand",
    "command",
    "current_session",
    "is_transient",
]
