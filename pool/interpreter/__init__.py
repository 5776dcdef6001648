"""Code that runs inside each interpreter. Needs only the standard library, msgpack and
:mod:`snakepool.errors` (dependency-free), so it can run under another Python executable.

Adapter authors use :func:`command` (and, for per-interpreter state, :class:`Adapter`)
and raise :class:`InvalidArguments` & co. (the one error tree of :mod:`snakepool.errors`)
to reject a request.
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
from snakepool.pool.interpreter.adapter import Adapter, command

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
]
