"""The floor for benchmark (c): a bare child answering length-prefixed msgpack pings.

Run as ``python raw_echo.py REQ_FD RESP_FD``. It reads frames (4-byte big-endian
length + msgpack) from ``REQ_FD``, decodes each as ``[0, id, command, args]`` and
answers ``[1, id, True, {"pong": True, "pid": <pid>}]`` on ``RESP_FD`` — the same
message shapes as the pool's wire format, with none of the pool (no dataclasses, no
command table, no counters). It exits 0 at EOF. Standard library and msgpack only.
"""

from __future__ import annotations

import os
import signal
import struct
import sys

import msgpack

_HEADER = struct.Struct(">I")


def serve(req_fd: int, resp_fd: int) -> int:
    """Answer pings until EOF; 3 on a malformed request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent: it ends us
    pid = os.getpid()
    buffer = bytearray()
    while True:
        while len(buffer) < 4 or len(buffer) < 4 + _HEADER.unpack_from(buffer)[0]:
            chunk = os.read(req_fd, 1 << 16)
            if not chunk:
                return 0
            buffer += chunk
        end = 4 + _HEADER.unpack_from(buffer)[0]
        message = msgpack.unpackb(bytes(buffer[4:end]), raw=False, strict_map_key=False)
        del buffer[:end]
        kind, rid, _command, _args = message
        if kind != 0:
            return 3
        payload = msgpack.packb((1, rid, True, {"pong": True, "pid": pid}), use_bin_type=True)
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        while data:
            data = data[os.write(resp_fd, data) :]


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
