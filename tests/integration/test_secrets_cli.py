"""Secrets stay out of what the CLI prints, what nodes log and every process's arguments.

A real redis-server with ``requirepass``; the password is given only as part of
``SNAKEPOOL_REDIS_URL``, as an operator would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from snakepool.tasks.local.launcher import Launcher
from tests.conftest import free_port
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

SECRET = "Sup3r-s3cret-pw"


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", SECRET, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                break
        except redis.RedisError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
    client.close()
    yield url
    process.terminate()
    process.wait(10)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SNAKEPOOL_REDIS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_cli_output_never_shows_the_password(secret_redis: str) -> None:
    shown = _cli(secret_redis, "status")
    assert shown.returncode == 0, shown.stderr
    wrong = secret_redis.replace(SECRET, "Wr0ng-passw0rd")
    refused = _cli(wrong, "status")
    assert refused.returncode != 0
    dead = secret_redis.rsplit(":", 1)[0].rsplit(":", 1)[0] + f":{free_port()}/0"
    unreachable = _cli(dead, "-v", "call", "ping", "--direct")
    assert unreachable.returncode != 0
    for done in (shown, refused, unreachable):
        assert SECRET not in done.stdout + done.stderr
        assert "Wr0ng-passw0rd" not in done.stdout + done.stderr


@pytest.mark.timeout(120)
def test_nodes_and_flower_keep_the_password_off_their_command_line(
    secret_redis: str, tmp_path: Path
) -> None:
    cluster = Cluster(
        secret_redis, tmp_path, adapter="snakepool.pool.interpreter.builtin", pool_size=1
    )
    (tmp_path / "logs").mkdir()
    launcher = Launcher(dict(os.environ), logdir=tmp_path / "logs")
    try:
        node = cluster.start("all", f"secret-{os.getpid()}")
        flower = launcher.start_flower(secret_redis, free_port())
        for pid in (node.process.pid, flower.process.pid):
            process = psutil.Process(pid)
            assert SECRET not in " ".join(process.cmdline())
            for child in process.children(recursive=True):
                assert SECRET not in " ".join(child.cmdline())
        assert psutil.Process(flower.process.pid).environ()["CELERY_BROKER_URL"] == secret_redis
    finally:
        launcher.stop_all()
        assert cluster.stop() == []
    assert SECRET not in node.log.read_text(errors="replace")
