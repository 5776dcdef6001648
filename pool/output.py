"""Interpreter stdout/stderr → logging, one record per line, tagged with who wrote it.

Bytes arrive in arbitrary chunks; a line split across two reads is held back until its
end arrives (or the stream closes), and an endless line is cut at :data:`MAX_LOG_LINE`.
"""

from __future__ import annotations

import logging
from collections import deque

__all__ = ["MAX_LOG_LINE", "OutputLog"]

#: Longest single line passed to logging.
MAX_LOG_LINE = 4000

log = logging.getLogger("snakepool.interpreter")


class OutputLog:
    """Line-splits and logs output per file descriptor."""

    def __init__(self) -> None:
        self._partial: dict[int, bytes] = {}

    def feed(
        self,
        fd: int,
        data: bytes,
        *,
        stream: str,
        label: str,
        recent: deque[str] | None = None,
        final: bool = False,
    ) -> None:
        """Log the complete lines in ``data`` (``final``: the stream ended, flush all).

        ``stream`` is ``stdout`` (logged at INFO) or ``stderr`` (WARNING); ``recent``
        keeps the last lines for error messages.
        """
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        rest = b"" if final else lines.pop()
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[fd] = rest
        level = logging.INFO if stream == "stdout" else logging.WARNING
        for raw in lines:
            if not raw:
                continue
            line = raw[:MAX_LOG_LINE].decode(errors="replace")
            if recent is not None:
                recent.append(line)
            log.log(level, "[%s %s] %s", label, stream, line)

    def forget(self, fd: int) -> None:
        """Drop what is held for ``fd`` (it was closed)."""
        self._partial.pop(fd, None)
