"""The CLI as a new user first meets it: a Redis, and no node running yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from snakepool.sessions import SessionStore
from tests.integration.cluster import ROOT

pytestmark = [pytest.mark.integration]


def snakepool(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80",
             "SNAKEPOOL_REDIS_URL": redis_url},
    )  # fmt: skip


def test_call_with_no_node_fails_at_once_and_sends_nothing(redis_url: str) -> None:
    started = time.monotonic()
    done = snakepool(redis_url, "call", "ping")
    elapsed = time.monotonic() - started
    text = " ".join(done.stdout.split())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no live node serves router, v2compat" in text and "nothing was sent" in text
    assert elapsed < 15  # not the 60 s result timeout (the 2 s budget: see test_operations)
    client = redis.Redis.from_url(redis_url)
    assert [client.llen(q) for q in ("router", "v3", "v2compat")] == [0, 0, 0]
    assert list(client.scan_iter(match="celery-task-meta-*")) == []
    client.close()


def test_check_with_no_node_fails_naming_each_missing_consumer(redis_url: str) -> None:
    done = snakepool(redis_url, "check", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    items = {item["name"]: item for item in json.loads(done.stdout)["items"]}
    assert [name for name, item in items.items() if not item["ok"]] == [
        "router", "v3", "v2compat", "versions",
    ]  # fmt: skip
    assert "no live consumer on v3" in items["v3"]["detail"]
    assert items["versions"]["detail"] == "no live nodes"


def test_sessions_create_against_redis(redis_url: str) -> None:
    done = snakepool(redis_url, "sessions", "create", "--ttl", "120", "--metadata", '{"a": 1}')
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    client = redis.Redis.from_url(redis_url)
    session = SessionStore(client).get(session_id)
    assert session is not None and session["ttl"] == 120 and session["metadata"] == {"a": 1}
    assert 0 < client.ttl(f"snakepool:session:{session_id}") <= 120
    client.close()
