"""Code that runs inside each interpreter. Needs only the standard library and msgpack,
and nothing else from snakepool, so it can run under another Python executable.

Adapter authors use :func:`command` (and, for per-interpreter state, :class:`Adapter`)
and raise :class:`InvalidArguments` & co. to reject a request.
"""

from pool.interpreter.adapter import (
    Adapter,
    CommandError,
    ConfigError,
    InvalidArguments,
    PayloadTooLarge,
    ProgramNotFound,
    SessionNotFound,
    UnknownCommand,
    command,
)

__all__ = [
    "Adapter",
    "CommandError",
    "ConfigError",
    "InvalidArguments",
    "PayloadTooLarge",
    "ProgramNotFound",
    "SessionNotFound",
    "UnknownCommand",
    "command",
]
