"""The pool's end of one interpreter's pipes: framed messages with deadlines.

Both pipe ends are non-blocking; waiting is done with ``poll`` so every read and write
honours a deadline, and a hung interpreter can never hang the caller. ``receive`` is
for the thread that leased the interpreter; ``feed`` is for the supervisor's event
loop (readiness handshake, health pings), which only reads what is already there.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time

from snakepool.pool.interpreter import wire

__all__ = ["Channel", "ChannelClosed", "ChannelTimeout"]

_HEADER_SIZE = wire.HEADER.size
_HEADER_UNPACK = wire.HEADER.unpack_from
_CHUNK = 1 << 16


class ChannelClosed(Exception):
    """The interpreter's end is gone (EOF on read, EPIPE on write)."""


class ChannelTimeout(Exception):
    """The deadline passed before the message was through."""


class Channel:
    """Frames over a (write fd, read fd) pipe pair. Not thread-safe: one user at a time.

    Args:
        write_fd: Our end of the request pipe.
        read_fd: Our end of the reply pipe.
        limit: Largest frame accepted in either direction (``max_message_bytes``).
    """

    def __init__(self, write_fd: int, read_fd: int, *, limit: int) -> None:
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.limit = limit
        self._buffer = bytearray()
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        self._readable = select.poll()
        self._readable.register(read_fd, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(write_fd, select.POLLOUT)

    def send(self, payload: bytes, deadline: float) -> None:
        """Write one frame (``payload`` without its header).

        Raises:
            ChannelClosed: the interpreter's end is closed.
            ChannelTimeout: the pipe stayed full until ``deadline`` (monotonic).
        """
        self.send_frame(wire.frame(payload), deadline)

    def send_frame(self, data: bytes, deadline: float) -> None:
        """Write one whole frame (header included); see :meth:`send`."""
        try:
            written = os.write(self.write_fd, data)  # nearly always all of it at once
        except BlockingIOError:
            written = 0
        except OSError as exc:  # EPIPE: the interpreter is gone
            raise ChannelClosed(str(exc)) from None
        if written == len(data):
            return
        view = memoryview(data)[written:]
        try:
            while view:
                try:
                    view = view[os.write(self.write_fd, view) :]
                except BlockingIOError:
                    if not self._writable.poll(_remaining_ms(deadline)):
                        raise ChannelTimeout from None
        except OSError as exc:  # EPIPE: the interpreter is gone
            raise ChannelClosed(str(exc)) from None

    def receive_payload(self, deadline: float) -> bytes:
        """Block until one whole frame has arrived; return its payload (undecoded).

        Raises:
            ChannelClosed: EOF before a whole frame.
            ChannelTimeout: ``deadline`` (monotonic) passed.
            wire.DecodeError: an oversize frame.
        """
        if not self._buffer:
            # The usual case: nothing buffered, and the reply arrives whole in one read.
            if not self._readable.poll(_remaining_ms(deadline)):
                raise ChannelTimeout
            try:
                chunk = os.read(self.read_fd, _CHUNK)
            except BlockingIOError:
                chunk = None  # a spurious wake-up: wait again below
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if chunk is not None:
                if not chunk:
                    raise ChannelClosed("EOF")
                if len(chunk) >= _HEADER_SIZE:
                    (size,) = _HEADER_UNPACK(chunk)
                    if size <= self.limit and len(chunk) == _HEADER_SIZE + size:
                        return chunk[_HEADER_SIZE:]
                self._buffer += chunk
        while True:
            payload = self._take()
            if payload is not None:
                return payload
            if not self._readable.poll(_remaining_ms(deadline)):
                raise ChannelTimeout
            self._read_some()

    def receive(self, deadline: float) -> wire.Request | wire.Reply | wire.Ready:
        """Like :meth:`receive_payload`, decoded (``DecodeError`` if undecodable)."""
        return wire.decode(self.receive_payload(deadline))

    def feed(self) -> wire.Request | wire.Reply | wire.Ready | None:
        """Read what is available without blocking; a whole message or None."""
        payload = self._take()
        if payload is None:
            self._read_some()
            payload = self._take()
        return wire.decode(payload) if payload is not None else None

    def close(self) -> None:
        """Close both ends (idempotent)."""
        for fd in (self.write_fd, self.read_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.write_fd = self.read_fd = -1

    def close_request_pipe(self) -> None:
        """Close only our write end: the interpreter sees EOF and exits cleanly."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _read_some(self) -> None:
        want = _CHUNK
        if len(self._buffer) >= _HEADER_SIZE:  # read a large frame in few calls
            (size,) = wire.HEADER.unpack_from(self._buffer)
            want = max(_CHUNK, min(size, self.limit) + _HEADER_SIZE - len(self._buffer))
        try:
            chunk = os.read(self.read_fd, want)
        except BlockingIOError:
            return
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if not chunk:
            raise ChannelClosed("EOF")
        self._buffer += chunk

    def _take(self) -> bytes | None:
        """The next whole frame's payload from the buffer, if there is one."""
        buffer = self._buffer
        if len(buffer) < _HEADER_SIZE:
            return None
        (size,) = wire.HEADER.unpack_from(buffer)
        if size > self.limit:
            raise wire.DecodeError(f"frame of {size} bytes exceeds the limit of {self.limit}")
        end = _HEADER_SIZE + size
        if len(buffer) < end:
            return None
        payload = bytes(buffer[_HEADER_SIZE:end])
        del buffer[:end]
        return payload


def _remaining_ms(deadline: float) -> int:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ChannelTimeout
    return max(1, math.ceil(remaining * 1000))
