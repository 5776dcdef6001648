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
    "frame",
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
