"""The wire between the pool and one interpreter: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. The
payload is a short array whose first element is the message kind, so decoding is one
``unpackb`` and a tuple unpack — this sits on the hot path of every request.

Shared by both sides: the pool imports it, and so does the interpreter, which may run
under another Python and therefore needs nothing but the standard library and msgpack.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "HEADER",
    "DecodeError",
    "Ready",
    "Reply",
    "Request",
    "decode",
    "decode_reply",
    "decode_request",
    "frame",
    "framed_reply",
    "framed_request",
]

#: ``>I``: the frame header, a big-endian unsigned 32-bit payload length.
HEADER = struct.Struct(">I")

_REQUEST, _REPLY, _READY = 0, 1, 2

_packer = msgpack.Packer(use_bin_type=True)


def _pack(value: Any) -> bytes:
    return bytes(_packer.pack(value))


class DecodeError(ValueError):
    """A frame that is not a valid snakepool message."""


@dataclass(frozen=True, slots=True)
class Request:
    """Run ``command`` with ``args``; ``id`` is echoed in the reply."""

    id: int
    command: str
    args: dict[str, Any]

    def encode(self) -> bytes:
        """Serialize to a msgpack payload (without the frame header)."""
        return _pack((_REQUEST, self.id, self.command, self.args))


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
        """Serialize to a msgpack payload (without the frame header)."""
        return _pack((_REPLY, self.id, self.ok, self.value))


@dataclass(frozen=True, slots=True)
class Ready:
    """The readiness handshake an interpreter sends once, before any reply."""

    pid: int
    commands: dict[str, dict[str, bool]]
    python: str

    def encode(self) -> bytes:
        """Serialize to a msgpack payload (without the frame header)."""
        return _pack((_READY, self.pid, self.commands, self.python))


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length header."""
    return HEADER.pack(len(payload)) + payload


# The hot path: plain tuples, no dataclass per message. The parent side is called from
# many threads at once, so it uses packb (a Packer per call); the interpreter side is
# single-threaded and reuses one Packer.


def framed_request(rid: int, command: str, args: dict[str, Any]) -> bytes:
    """A whole request frame (header included)."""
    payload: bytes = msgpack.packb((_REQUEST, rid, command, args), use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def framed_reply(rid: int, ok: bool, value: Any) -> bytes:
    """A whole reply frame (header included); interpreter side only (one thread)."""
    payload = _pack((_REPLY, rid, ok, value))
    return HEADER.pack(len(payload)) + payload


def _unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise DecodeError(f"undecodable frame: {exc}") from exc


def decode_request(payload: bytes) -> tuple[int, str, dict[str, Any]]:
    """``(id, command, args)`` of a request frame.

    Raises:
        DecodeError: not a well-formed request.
    """
    message = _unpack(payload)
    if (
        type(message) is list
        and len(message) == 4
        and message[0] == _REQUEST
        and type(message[2]) is str
        and type(message[3]) is dict
    ):
        return message[1], message[2], message[3]
    raise DecodeError("not a request")


def decode_reply(payload: bytes) -> tuple[int, bool, Any]:
    """``(id, ok, value)`` of a reply frame.

    Raises:
        DecodeError: not a well-formed reply.
    """
    message = _unpack(payload)
    if type(message) is list and len(message) == 4 and message[0] == _REPLY:
        return message[1], bool(message[2]), message[3]
    raise DecodeError("not a reply")


def decode(payload: bytes) -> Request | Reply | Ready:
    """Parse one frame payload.

    Raises:
        DecodeError: the bytes are not msgpack, or not a known message shape.
    """
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise DecodeError(f"undecodable frame: {exc}") from exc
    try:
        kind = message[0]
        if kind == _REPLY:
            _, rid, ok, value = message
            return Reply(rid, bool(ok), value)
        if kind == _REQUEST:
            _, rid, command, args = message
            if not isinstance(command, str) or not isinstance(args, dict):
                raise DecodeError("request needs a str command and a dict of args")
            return Request(rid, command, args)
        if kind == _READY:
            _, pid, commands, python = message
            return Ready(pid, commands, python)
    except (TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"malformed message: {exc}") from exc
    raise DecodeError(f"unknown message kind {kind!r}")
