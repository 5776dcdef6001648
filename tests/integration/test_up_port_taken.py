"""``snakepool up`` when the port of its local REDIS_URL is taken by something it cannot
use: it fails at once, naming the port and what answered, and starts nothing.

Before, a redis-server was started that could not bind the port, and ``up`` then either
said only "redis-server did not start" or, when the port's owner accepted connections
and never answered, waited on it for as long as it stayed silent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.integration.cluster import ROOT
from tests.integration.test_secrets_cli import SECRET, secret_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["secret_redis"]  # the fixture, used here by name

#: Far under what the silent listener would hold a client that waits for it.
FAST = 6.0


def up(redis_url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", "up", "--v3", "0", "--v2compat", "0",
         "--flower-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=50, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250",
             "SNAKEPOOL_REDIS_URL": redis_url},
    )  # fmt: skip
    return done, time.monotonic() - started


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server, server.getsockname()[1]
    server.close()


def serve_http(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return  # closed by the fixture
        with connection:
            connection.recv(64)
            connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")


def assert_refused_fast(done: subprocess.CompletedProcess[str], elapsed: float, port: int) -> str:
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert elapsed < FAST, f"took {elapsed:.1f}s: {said}"
    assert f"port {port} of 127.0.0.1" in said and "is taken by" in said, said
    assert "started redis-server" not in said and "Traceback" not in said, said
    return said


def test_a_web_server_on_the_port_is_named(listener: tuple[socket.socket, int]) -> None:
    server, port = listener
    threading.Thread(target=serve_http, args=(server,), daemon=True).start()
    said = assert_refused_fast(*up(f"redis://127.0.0.1:{port}/0"), port)
    assert "something that is not Redis: 'HTTP/1.0 400 Bad Request'" in said


def test_a_silent_listener_is_named_not_waited_for(listener: tuple[socket.socket, int]) -> None:
    _, port = listener  # listening, never accepting: connections wait in its backlog
    said = assert_refused_fast(*up(f"redis://127.0.0.1:{port}/0"), port)
    assert "accepted the connection and said nothing" in said


def test_a_redis_that_wants_a_password_is_named(secret_redis: str) -> None:
    port = urlsplit(secret_redis).port
    assert port is not None
    said = assert_refused_fast(*up(f"redis://127.0.0.1:{port}/0"), port)
    assert "a Redis that refuses: 'NOAUTH" in said and SECRET not in said


def test_a_redis_the_url_cannot_use_is_named(redis_server: str) -> None:
    port = urlsplit(redis_server).port
    assert port is not None
    said = assert_refused_fast(*up(f"redis://127.0.0.1:{port}/99"), port)  # 16 databases
    assert "a Redis (PONG)" in said and "DB index is out of range" in said
