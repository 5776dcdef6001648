"""The wire between the pool and one interpreter: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. The
payload is a short array whose first element is the message kind, so decoding is one
``unpackb`` and a tuple unpack — this sits on the hot path of every request.

A request is ``[0, id, command, args, session, transient]``: besides the command it
carries its scope (:mod:`~snakepool.pool.interpreter.context`). A reply is
``[1, id, ok, value]``; the readiness handshake ``[2, pid, commands, python]``. What
values may cross, how integers beyond 64 bits do and why none of more than 4300 digits
does (:data:`~snakepool.pool.interpreter.values.MAX_INT_DIGITS`, enforced by the encoder
and the decoder alike), is in :mod:`~snakepool.pool.interpreter.values`.

Encoding never hangs or half-sends: a value that cannot cross raises
:class:`EncodeError` (a ``ValueError``) naming its path, before anything is written.
Decoding tells a corrupted stream (:class:`DecodeError`: fatal, the interpreter is
replaced) from a well-framed message whose values did not survive the trip
(:class:`UndecodableRequest` on the interpreter's side; an error reply on the pool's):
the interpreter is fine and the caller gets a typed error.

Shared by both sides: the pool imports it, and so does the interpreter, which may run
under another Python and therefore needs nothing but the standard library and msgpack.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from snakepool.pool.interpreter.values import (
    describe_decode_failure,
    ext_hook,
    find_unencodable,
    pack_default,
)

__all__ = [
    "HEADER",
    "DecodeError",
    "EncodeError",
    "Ready",
    "Reply",
    "Request",
    "UndecodableRequest",
    "decode",
    "decode_reply",
    "decode_request",
    "encode_request_body",
    "frame",
    "frame_request",
    "framed_reply",
    "framed_request",
]

#: ``>I``: the frame header, a big-endian unsigned 32-bit payload length.
HEADER = struct.Struct(">I")

_REQUEST, _REPLY, _READY = 0, 1, 2
_REQUEST_PREFIX = b"\x96\x00"  # fixarray of 6, then the kind 0

# The interpreter side is single-threaded and reuses one Packer; the parent side is
# called from many threads at once, so each thread reuses its own (building a Packer
# per message, as ``packb`` does, costs more than the packing of a ping).
_packer = msgpack.Packer(use_bin_type=True, default=pack_default)
_thread = threading.local()
_PACK_ERRORS = (TypeError, ValueError, OverflowError)


class DecodeError(ValueError):
    """A frame that is not a valid snakepool message."""


class UndecodableRequest(DecodeError):
    """A well-framed request whose arguments did not decode; the stream is intact.

    Attributes:
        id: The request id, for the error reply.
        command: The command it was for.
        reason: Why, in words a caller can act on.
    """

    def __init__(self, rid: int, command: str, reason: str) -> None:
        super().__init__(f"request {rid} ({command!r}): {reason}")
        self.id = rid
        self.command = command
        self.reason = reason


class EncodeError(ValueError):
    """A value that cannot cross the pipe; ``str(error)`` names its path.

    A ``ValueError``, so the pool reports it as ``InvalidArguments`` (for a request)
    and the interpreter as ``CommandFailed`` (for a result).
    """


def _check_scope(session: Any) -> None:
    if session is not None and type(session) is not str:
        raise EncodeError(f"session: must be a string or None, not {type(session).__name__}")


def _encode_error(exc: Exception, parts: dict[str, Any]) -> EncodeError:
    for name, value in parts.items():
        if problem := find_unencodable(value, name):
            return EncodeError(problem)
    return EncodeError(f"{', '.join(parts)}: cannot be encoded: {exc}")


def _pack(value: Any) -> bytes:
    return bytes(_packer.pack(value))


def _packb(value: Any) -> bytes:
    """Pack with this thread's Packer (thread-safe, unlike :func:`_pack`)."""
    try:
        packer = _thread.packer
    except AttributeError:
        packer = _thread.packer = msgpack.Packer(use_bin_type=True, default=pack_default)
    return bytes(packer.pack(value))


def _unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except Exception as exc:
        raise DecodeError(f"undecodable frame: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Request:
    """Run ``command`` with ``args`` in a scope; ``id`` is echoed in the reply."""

    id: int
    command: str
    args: dict[str, Any]
    session: str | None = None
    transient: bool = False

    def encode(self) -> bytes:
        """Serialize to a msgpack payload (without the frame header).

        Raises:
            EncodeError: a value cannot cross (names its path).
        """
        _check_scope(self.session)
        parts = (self.command, self.args, self.session, self.transient is True)
        try:
            return _packb((_REQUEST, self.id, *parts))
        except _PACK_ERRORS as exc:
            raise _encode_error(exc, {"command": self.command, "args": self.args}) from None


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of request ``id``: ``value`` is the result, or an error dict if not ``ok``.

    An error dict has ``type`` (an error class name such as ``InvalidArguments``),
    ``message``, and optionally ``remote_type`` and ``traceback``.
    """

    id: int
    ok: bool
    value: Any

    def encode(self) -> bytes:
        """Serialize to a msgpack payload (without the frame header).

        Raises:
            EncodeError: the value cannot cross (names its path).
        """
        try:
            return _packb((_REPLY, self.id, self.ok, self.value))
        except _PACK_ERRORS as exc:
            raise _encode_error(exc, {"result": self.value}) from None


@dataclass(frozen=True, slots=True)
class Ready:
    """The readiness handshake an interpreter sends once, before any reply."""

    pid: int
    commands: dict[str, dict[str, bool]]
    python: str

    def encode(self) -> bytes:
        """Serialize to a msgpack payload (without the frame header)."""
        return self.encoder(self.commands, self.python)(self.pid)

    @staticmethod
    def encoder(commands: dict[str, dict[str, bool]], python: str) -> Callable[[int], bytes]:
        """``pid`` → the payload of ``Ready(pid, commands, python)``, all but the pid
        packed now (msgpack concatenates: an array header, then each item).

        Built in the template before it forks, so a new interpreter packs only its pid:
        every object it reads after the fork (the command table, here) is a page it
        copies.
        """
        head = b"\x94" + _pack(_READY)  # fixarray of 4
        tail = _pack(commands) + _pack(python)
        return lambda pid: head + _pack(pid) + tail


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length header."""
    return HEADER.pack(len(payload)) + payload


# ----------------------------------------------------------------- the hot path
# Plain tuples, no dataclass per message.


def framed_request(
    rid: int,
    command: str,
    args: dict[str, Any],
    *,
    session: str | None = None,
    transient: bool = False,
) -> bytes:
    """A whole request frame (header included).

    Raises:
        EncodeError: a value cannot cross (names its path, e.g. ``args['when']``).
    """
    if session is not None and type(session) is not str:  # inline: the hot path
        _check_scope(session)
    try:
        payload = _packb((_REQUEST, rid, command, args, session, transient is True))
    except _PACK_ERRORS as exc:
        raise _encode_error(exc, {"command": command, "args": args, "session": session}) from None
    return HEADER.pack(len(payload)) + payload


def encode_request_body(
    command: str, args: dict[str, Any], *, session: str | None = None, transient: bool = False
) -> bytes:
    """A request without its id, for encoding before an interpreter is leased.

    The id is per interpreter, so it is added by :func:`frame_request` once one is;
    ``frame_request(rid, encode_request_body(...))`` equals ``framed_request(rid, ...)``.

    Raises:
        EncodeError: a value cannot cross (names its path).
    """
    _check_scope(session)
    try:
        return _packb(command) + _packb(args) + _packb(session) + _packb(transient is True)
    except _PACK_ERRORS as exc:
        raise _encode_error(exc, {"command": command, "args": args, "session": session}) from None


def frame_request(rid: int, body: bytes) -> bytes:
    """The whole request frame for ``body`` (from :func:`encode_request_body`) as ``rid``."""
    payload = _REQUEST_PREFIX + _packb(rid) + body
    return HEADER.pack(len(payload)) + payload


def framed_reply(rid: int, ok: bool, value: Any) -> bytes:
    """A whole reply frame (header included); interpreter side only (one thread).

    Raises:
        EncodeError: the value cannot cross (names its path, e.g. ``result['when']``).
    """
    try:
        payload = _pack((_REPLY, rid, ok, value))
    except _PACK_ERRORS as exc:
        raise _encode_error(exc, {"result" if ok else "error": value}) from None
    return HEADER.pack(len(payload)) + payload


def _salvage(payload: bytes, kind: int, failure: Exception) -> tuple[int, Any]:
    """After a failed decode: the id and the next field, if the message starts well.

    Our packer packs a few values the unpacker then refuses (a tuple as a dict key,
    nesting at the unpacker's depth limit, an unknown extension): the frame is whole and
    the stream intact, so the message is answered, not treated as corruption.

    Raises:
        DecodeError: not even the start decodes, or trailing bytes (a corrupted stream).
    """
    if isinstance(failure, msgpack.ExtraData):
        raise DecodeError(f"undecodable frame: {failure}")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=ext_hook)
    unpacker.feed(payload)
    try:
        if unpacker.read_array_header() not in (4, 6) or unpacker.unpack() != kind:
            raise DecodeError("not a snakepool message")
        rid, second = unpacker.unpack(), unpacker.unpack()
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"undecodable frame: {failure}") from exc
    if type(rid) is not int:
        raise DecodeError(f"undecodable frame: {failure}")
    return rid, second


def decode_request(payload: bytes) -> tuple[int, str, dict[str, Any], str | None, bool]:
    """``(id, command, args, session, transient)`` of a request frame.

    A four-element request (no scope) is accepted too: session ``None``, not transient.

    Raises:
        UndecodableRequest: well framed, but its arguments did not decode.
        DecodeError: not a well-formed request.
    """
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except Exception as exc:
        rid, command = _salvage(payload, _REQUEST, exc)
        if type(command) is not str:
            raise DecodeError(f"undecodable frame: {exc}") from exc
        raise UndecodableRequest(rid, command, describe_decode_failure(exc)) from exc
    if type(message) is list and message and message[0] == _REQUEST:
        size = len(message)
        if size == 6 and type(message[2]) is str and type(message[3]) is dict:
            session = message[4]
            if session is None or type(session) is str:
                return message[1], message[2], message[3], session, message[5] is True
        elif size == 4 and type(message[2]) is str and type(message[3]) is dict:
            return message[1], message[2], message[3], None, False  # no scope (older senders)
    raise DecodeError("not a request")


def decode_reply(payload: bytes) -> tuple[int, bool, Any]:
    """``(id, ok, value)`` of a reply frame.

    A well-framed reply whose value did not decode (the interpreter packed something
    the unpacker refuses) becomes a ``CommandFailed`` error reply: the interpreter is
    fine, only that result could not cross.

    Raises:
        DecodeError: not a well-formed reply.
    """
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except Exception as exc:
        rid, _ = _salvage(payload, _REPLY, exc)
        reason = describe_decode_failure(exc)
        message = f"result could not be decoded: {reason}"
        return rid, False, {"type": "CommandFailed", "message": message}
    if type(message) is list and len(message) == 4 and message[0] == _REPLY:
        return message[1], bool(message[2]), message[3]
    raise DecodeError("not a reply")


def decode(payload: bytes) -> Request | Reply | Ready:
    """Parse one frame payload.

    Raises:
        DecodeError: the bytes are not msgpack, or not a known message shape.
    """
    message = _unpack(payload)
    try:
        kind = message[0]
        if kind == _REPLY:
            _, rid, ok, value = message
            return Reply(rid, bool(ok), value)
        if kind == _REQUEST:
            _, rid, command, args, *scope = message
            if not isinstance(command, str) or not isinstance(args, dict):
                raise DecodeError("request needs a str command and a dict of args")
            session, transient = scope if len(scope) == 2 else (None, False)
            if len(scope) not in (0, 2) or not (session is None or isinstance(session, str)):
                raise DecodeError("request scope must be [session or null, transient]")
            return Request(rid, command, args, session, transient is True)
        if kind == _READY:
            _, pid, commands, python = message
            return Ready(pid, commands, python)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise DecodeError(f"malformed message: {exc}") from exc
    raise DecodeError(f"unknown message kind {kind!r}")
