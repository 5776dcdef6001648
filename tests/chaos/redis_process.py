"""A redis-server the test owns, on a free port, that can be stopped and started again
on the same port and directory (so an AOF written before the stop is read back)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port


class RedisProcess:
    """``redis-server`` with or without AOF persistence (``appendonly``).

    Args:
        workdir: Its ``--dir`` (the AOF lives there).
        appendonly: Persist with the AOF, as compose runs Redis.
    """

    def __init__(self, workdir: Path, *, appendonly: bool) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing (make test installs it)"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        self.log = workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until it answers PING (it has loaded its AOF by then)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (what ``docker compose stop`` sends): Redis flushes its AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
