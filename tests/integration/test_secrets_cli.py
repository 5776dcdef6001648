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

from snakepool.pool import Pool
from snakepool.tasks.client import Client
from snakepool.tasks.local.launcher import Launcher
from snakepool.tasks.worker.broker_url import kombu_url
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


@pytest.mark.timeout(120)
def test_a_password_given_as_a_query_parameter_works_and_stays_hidden(
    secret_redis: str, tmp_path: Path
) -> None:
    """``redis://host:port/0?password=…`` (read by redis-py) made kombu raise TypeError on
    every connection: the node did not start and a client could send nothing."""
    host = secret_redis.rpartition("@")[2]
    url = f"redis://{host}?password={SECRET}"
    cluster = Cluster(url, tmp_path, adapter="snakepool.pool.interpreter.builtin", pool_size=1)
    try:
        node = cluster.start("all", f"query-{os.getpid()}")
        client = Client(redis_url=url)
        try:
            assert client.execute("echo", {"x": 1}, timeout=30) == {"x": 1}
        finally:
            client.close()
        shown = _cli(url, "status")
        assert shown.returncode == 0 and node.hostname in shown.stdout
        assert SECRET not in shown.stdout + shown.stderr
    finally:
        assert cluster.stop() == []
    assert SECRET not in node.log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0?password=p%40ss%3Aw%C3%A9", "redis://:p%40ss%3Aw%C3%A9@h:6379/0"),
        ("redis://h/0?db=1&password=x&username=al", "redis://al:x@h/0?db=1"),
        ("redis://:mine@h/0?password=theirs", "redis://:mine@h/0"),  # as redis-py: user part wins
        ("redis://u@h/0?password=z", "redis://u:z@h/0"),
        ("rediss://:a@h/0", "rediss://:a@h/0"),
        ("redis://h/0?ssl_cert_reqs=none", "redis://h/0?ssl_cert_reqs=none"),
    ],
)
def test_kombu_url_moves_query_credentials_into_the_user_part(url: str, expected: str) -> None:
    assert kombu_url(url) == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_interpreters_never_get_the_redis_or_broker_url(
    registry_dir: str, start_method: str
) -> None:
    """An interpreter talks to its pool only: code it runs cannot read the password."""
    url = f"redis://:{SECRET}@127.0.0.1:6399/0"
    env = {**os.environ, "SNAKEPOOL_REDIS_URL": url, "snakepool_broker_url": url, "KEEP": "1"}
    pool = Pool(size=1, env=env, registry_dir=registry_dir, start_method=start_method)
    pool.start()
    try:
        interpreter = psutil.Process(pool.interpreter_pids()[0])
        for process in (interpreter, interpreter.parent()):  # and the template
            assert process is not None
            seen = process.environ()
            assert seen["KEEP"] == "1"
            assert not {"SNAKEPOOL_REDIS_URL", "snakepool_broker_url"} & set(seen)
            assert SECRET not in "".join(seen.values())
        assert pool.execute("ping")["pong"] is True
    finally:
        pool.stop(grace=2)
