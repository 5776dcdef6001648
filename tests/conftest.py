"""Shared fixtures: a real redis-server on a free port, and the no-leftover check.

Every process a test starts inherits ``SNAKEPOOL_TEST_RUN`` from this pytest process;
after each test, any process still carrying it (other than our own redis-server) is a
leak: the test fails and the process is killed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

TEST_RUN = uuid.uuid4().hex
os.environ["SNAKEPOOL_TEST_RUN"] = TEST_RUN
#: How long processes a test started may take to go away after it ends.
LEFTOVER_GRACE_SECONDS = 5.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _marked_processes(exclude: set[int]) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == me or process.pid in exclude:
            continue
        try:
            if (
                process.environ().get("SNAKEPOOL_TEST_RUN") == TEST_RUN
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


_SESSION_PIDS: set[int] = set()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail the test if any process it started outlives it."""
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while (left := _marked_processes(_SESSION_PIDS)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        described = []
        for process in left:
            try:
                described.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
                process.kill()
            except psutil.Error:
                continue
        if described:
            pytest.fail("processes left behind:\n" + "\n".join(described))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port for the whole session; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is missing: `make test` installs it (apt-get install redis-server)"
        )
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "SNAKEPOOL_TEST_RUN"},
    )
    _SESSION_PIDS.add(process.pid)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's redis-server, flushed for this test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client of the session's redis-server, flushed for this test."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def registry_dir(tmp_path: Path) -> str:
    """A private process-registry directory, so tests never sweep each other's runs."""
    path = tmp_path / "registry"
    path.mkdir()
    return str(path)
