"""The loop inside each interpreter: read a request frame, run the command, reply.

It talks to the pool over two dedicated pipes (never stdin/stdout, so user code that
prints cannot corrupt the protocol). It exits 0 when the request pipe reaches EOF
(the pool closed it, or died), which is the clean-exit handshake: the pool never
mistakes a retirement for a crash.

Usually entered in a child forked from the template (:mod:`snakepool.pool.interpreter.template`);
with ``start_method="spawn"`` it is run as ``python -m snakepool.pool.interpreter.server``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from snakepool.errors import SnakepoolError
from snakepool.pool.interpreter import context, wire
from snakepool.pool.interpreter.adapter import CommandTable, load_adapter
from snakepool.pool.interpreter.core import process_stats
from snakepool.pool.interpreter.reaper import become_group_leader, die_with_parent

__all__ = ["current_reply_fd", "handshake", "prepare_child", "serve"]

_HEADER_SIZE = wire.HEADER.size
_reply_fd = -1
#: What :func:`prepare_child` sets, as plain ints, and ``signal.signal`` without its enum
#: wrapping: the C function of ``_signal``, which the ``signal`` module wraps (CPython
#: 3.11's wrapper has no ``__wrapped__``). Right after a fork every object written is a
#: page the interpreter copies: turning the template's old handlers into enums (its
#: SIGCHLD handler is no member: a ValueError caught inside) ran the enum machinery
#: (~0.1 MB per interpreter).
_set_handler: Callable[[int, Any], Any] = getattr(
    sys.modules.get("_signal"), "signal", signal.signal
)
_SIGINT, _SIGTERM, _SIGCHLD = int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGCHLD)
_SIG_IGN, _SIG_DFL = int(signal.SIG_IGN), int(signal.SIG_DFL)


def current_reply_fd() -> int:
    """The reply pipe of this interpreter (for the chaos adapter's protocol corruption)."""
    return _reply_fd


class _FrameReader:
    """Reads whole frames from a blocking pipe, usually one ``read`` per request."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.buffer = bytearray()

    def next(self) -> bytes | None:
        """The next frame's payload, or None at EOF. Raises ``DecodeError`` if oversize."""
        buffer = self.buffer
        if not buffer:  # the usual case: one read brings exactly one whole request
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            if len(chunk) >= _HEADER_SIZE:
                (size,) = wire.HEADER.unpack_from(chunk)
                if size <= self.limit and len(chunk) == _HEADER_SIZE + size:
                    return chunk[_HEADER_SIZE:]
            buffer += chunk
        while True:
            if len(buffer) >= _HEADER_SIZE:
                (size,) = wire.HEADER.unpack_from(buffer)
                if size > self.limit:
                    raise wire.DecodeError(f"frame of {size} bytes over the limit")
                end = _HEADER_SIZE + size
                if len(buffer) >= end:
                    payload = bytes(buffer[_HEADER_SIZE:end])
                    del buffer[:end]
                    return payload
                want = max(end - len(buffer), 1 << 16)
            else:
                want = 1 << 16
            chunk = os.read(self.fd, want)
            if not chunk:
                return None
            buffer += chunk


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)  # nearly always all of it at once
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, **extra}


def _error_reply(exc: SnakepoolError) -> dict[str, Any]:
    """``exc`` as the parent will rebuild it: the nearest class of the error tree.

    An adapter's own subclass (``class BadQuestion(InvalidArguments)``) is unknown to
    the parent: it is reported as the tree's class it derives from — a client error stays
    a client error — with its own name in ``remote_type``. Every class of the tree
    arrives as itself (``QueueFull`` too: the adapter said so), with every field.
    """
    known = next(c for c in type(exc).__mro__ if c.__module__ == SnakepoolError.__module__)
    # The fields travel apart from the reply's own keys: a field named ``type``,
    # ``message`` or ``traceback`` is the adapter's, and arrives as it was raised.
    reply: dict[str, Any] = {"type": known.__name__, "message": exc.message, "data": exc.data}
    if known is not type(exc):
        reply["remote_type"] = type(exc).__name__
    return reply


def _run(table: CommandTable, command: str, args: dict[str, Any]) -> tuple[bool, Any]:
    handler = table.handlers.get(command)
    if handler is None:
        if command in table.disabled:
            reason = table.disabled[command]
            return False, _error("UnknownCommand", reason, setting="ALLOW_ADMIN_COMMANDS")
        return False, _error(
            "UnknownCommand",
            f"unknown command {command!r}",
            available=sorted(table.handlers),
        )
    try:
        return True, handler(args)
    except SnakepoolError as exc:  # raised on purpose: same class, same data on the other side
        return False, _error_reply(exc)
    except Exception as exc:
        return False, _error(
            "CommandFailed",
            f"{type(exc).__name__}: {exc}",
            remote_type=type(exc).__name__,
            traceback=traceback.format_exc(),
        )


def _encode_reply(rid: int, ok: bool, value: Any, limit: int) -> bytes:
    """The whole reply frame; an unserializable or oversize result becomes an error reply."""
    try:
        framed = wire.framed_reply(rid, ok, value)
    except wire.EncodeError as exc:
        # The value names its own path: "result['when']: date is not JSON-able".
        what = "result" if ok else "error"
        error = _error(
            "CommandFailed", f"cannot send the {what} back: {exc}", remote_type="EncodeError"
        )
        return wire.framed_reply(rid, False, error)
    size = len(framed) - _HEADER_SIZE
    if size > limit:
        error = _error(
            "PayloadTooLarge",
            f"result of {size} bytes exceeds max_message_bytes={limit}",
            size=size,
            limit=limit,
            direction="result",
        )
        return wire.framed_reply(rid, False, error)
    return framed


def handshake(table: CommandTable) -> Callable[[int], bytes]:
    """``pid`` → this interpreter's readiness handshake for ``table``, packed ahead
    (:meth:`wire.Ready.encoder`): the template builds it once, before it forks."""
    return wire.Ready.encoder(table.describe(), sys.version.split()[0])


def serve(
    req_fd: int,
    resp_fd: int,
    table: CommandTable,
    *,
    max_message_bytes: int,
    ready: Callable[[int], bytes] | None = None,
) -> int:
    """Announce readiness, then serve requests until EOF. Returns the exit code.

    ``ready`` is the handshake (:func:`handshake`), built by the template before it
    forks; built here when not given.
    """
    global _reply_fd
    _reply_fd = resp_fd
    process_stats.reset(adapter=table.adapter)
    table.setup()
    if ready is None:
        ready = handshake(table)
    _write_all(resp_fd, wire.frame(ready(os.getpid())))
    reader = _FrameReader(req_fd, max_message_bytes)
    scope = context.SCOPE
    while True:
        try:
            body = reader.next()
            if body is None:
                return 0
            rid, command, args, session, transient = wire.decode_request(body)
        except wire.UndecodableRequest as bad:  # the stream is intact: answer and go on
            rid, ok = bad.id, False
            value = _error("InvalidArguments", f"args of {bad.command!r}: {bad.reason}")
        except wire.DecodeError:
            return 3  # the pool never sends this; a corrupted stream is fatal
        else:
            # Nothing runs between requests, so entering the next scope is all it takes
            # (two stores, not a call: this is the hot path).
            scope.session, scope.transient = session, transient
            ok, value = _run(table, command, args)
        process_stats.requests += 1
        process_stats.errors += not ok
        _write_all(resp_fd, _encode_reply(rid, ok, value, max_message_bytes))


def prepare_child() -> None:
    """Make this process a well-behaved interpreter: the leader of its own process group
    (so whatever it starts can be killed with it), dying with its parent, ignoring Ctrl-C.

    Called first thing after the fork, and again (a no-op for the group) after the
    ``exec`` of spawn mode. Ctrl-C in a terminal reaches the whole foreground process
    group; the pool, not the interpreter, decides how in-flight work ends. See
    :mod:`snakepool.pool.interpreter.reaper` for why the group matters.
    """
    become_group_leader()
    _set_handler(_SIGINT, _SIG_IGN)
    _set_handler(_SIGTERM, _SIG_DFL)
    _set_handler(_SIGCHLD, _SIG_DFL)
    die_with_parent()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``start_method="spawn"``: a fresh interpreter, adapter imported here."""
    parser = argparse.ArgumentParser(prog="python -m snakepool.pool.interpreter.server")
    parser.add_argument("--req-fd", type=int, required=True)
    parser.add_argument("--resp-fd", type=int, required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--expected-ppid", type=int, default=0)
    parser.add_argument("--run-id", default="")  # the registry's marker, read from cmdline
    options = parser.parse_args(argv)
    prepare_child()
    if options.expected_ppid and os.getppid() != options.expected_ppid:
        return 4  # the parent died before PDEATHSIG was armed
    table = load_adapter(options.adapter)
    return serve(
        options.req_fd, options.resp_fd, table, max_message_bytes=options.max_message_bytes
    )


if __name__ == "__main__":
    sys.exit(main())
