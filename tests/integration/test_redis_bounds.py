"""Every Redis key is bounded by live data (issue 8.9), on a real redis-server.

The index of sessions drops expired ids, shadow records keep large results compacted,
and every list and stream holds its cap after more than the cap was pushed. The last
test runs a little of everything and checks each key it finds against the table of
docs/redis-keys.md, so a new unbounded key cannot appear unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from snakepool.config import load_settings
from snakepool.config.flags import FlagStore
from snakepool.config.limits import MAX_AUDIT_TEXT_CHARS, SHADOW_VALUE_MAX_BYTES
from snakepool.errors import InvalidArguments
from snakepool.sessions import SessionStore
from snakepool.tasks.client import Client
from snakepool.tasks.rollout import metrics as metrics_module
from snakepool.tasks.rollout import shadow as shadow_module
from snakepool.tasks.rollout.lease import ControllerLease
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import ShadowRecorder, outcome_of

pytestmark = pytest.mark.integration


def pair(name: str) -> str:
    """A shadow pair id as our client and router make them (32 hex digits), one per name."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


DOC = Path(__file__).resolve().parents[2] / "docs" / "redis-keys.md"
MIB = 1024 * 1024


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _wait_until_gone(connection: redis.Redis, key: str, timeout: float = 10.0) -> None:
    """Wait for Redis to expire ``key`` (time has to pass: there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while connection.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_the_session_index_drops_to_the_live_count(redis_url: str) -> None:
    """1000 x create_session(ttl=1): once expired, the next write leaves only the live."""
    app = Client(settings=load_settings(redis_url=redis_url, key_prefix="b:"))
    try:
        keep = app.create_session(ttl=600)
        short = [app.create_session(ttl=1) for _ in range(1000)]
        index = app.keys.session_index
        assert app.redis.zcard(index) == 1001
        _wait_until_gone(app.redis, app.keys.session(short[-1]))
        newest = app.create_session(ttl=600)  # a write
        assert app.redis.zcard(index) == 2
        assert sorted(app.redis.zrange(index, 0, -1)) == sorted([keep.encode(), newest.encode()])
        assert app.store.count() == 2
        assert [s["id"] for s in app.store.list()] == [newest, keep]
    finally:
        app.close()


@pytest.mark.timeout(30)
def test_reads_prune_the_index_too(client: redis.Redis) -> None:
    store = SessionStore(client, prefix="b:")
    for _ in range(50):
        store.create(ttl=1)
    _wait_until_gone(client, store.keys.session(store.create(ttl=1)))
    assert store.count() == 0
    assert client.zcard(store.keys.session_index) == 0


def test_a_shadow_record_of_a_1_mib_result_stays_under_the_cap(client: redis.Redis) -> None:
    recorder = ShadowRecorder(client, prefix="b:")
    big = {"blob": "x" * MIB, "pid": 1}
    assert recorder.record(pair("r1"), "primary", "v3", "echo", outcome_of(big, None)) is None
    stored = client.hget(f"b:shadow:{pair('r1')}", "primary")
    assert stored is not None and len(stored) <= SHADOW_VALUE_MAX_BYTES
    assert client.memory_usage(f"b:shadow:{pair('r1')}") < SHADOW_VALUE_MAX_BYTES
    assert 0 < client.ttl(f"b:shadow:{pair('r1')}") <= shadow_module.PAIR_TTL
    kept = json.loads(stored)["value"]["$compacted"]
    assert kept["bytes"] == len(json.dumps({"blob": "x" * MIB}, separators=(",", ":")))
    # The same value from the other lane (another pid: an ignored key) still matches.
    same = outcome_of({"blob": "x" * MIB, "pid": 2}, None)
    assert recorder.record(pair("r1"), "shadow", "v2compat", "echo", same) == []
    assert not client.exists(f"b:shadow:{pair('r1')}")  # compared: the pair is gone
    # A different large value is a mismatch, and the kept mismatch is bounded too.
    recorder.record(pair("r2"), "primary", "v3", "echo", outcome_of({"blob": "x" * MIB}, None))
    diffs = recorder.record(
        pair("r2"), "shadow", "v2compat", "echo", outcome_of({"blob": "y" * MIB}, None)
    )
    assert diffs and any("sha256" in d for d in diffs)
    entry = client.lindex("b:shadow:mismatches", 0)
    assert entry is not None and len(entry) < 3 * SHADOW_VALUE_MAX_BYTES
    assert recorder.counts() == {"compared": 2, "matched": 1, "mismatched": 1}


def test_the_mismatch_list_holds_its_cap(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow_module, "MAX_MISMATCHES", 5)
    recorder = ShadowRecorder(client, prefix="b:")
    for n in range(12):
        recorder.record(pair(f"r{n}"), "primary", "v3", "calc", outcome_of({"result": n}, None))
        recorder.record(
            pair(f"r{n}"), "shadow", "v2compat", "calc", outcome_of({"result": -n}, None)
        )
    assert client.llen("b:shadow:mismatches") == 5
    assert [m["request_id"] for m in recorder.mismatches(10)] == [
        pair(f"r{n}") for n in range(11, 6, -1)
    ]


def test_the_audit_stream_holds_its_cap_exactly(client: redis.Redis) -> None:
    flags = FlagStore(client, prefix="b:", audit_maxlen=5)
    for percent in range(12):
        flags.set_percent(percent, who="t", why=f"step {percent}")
    assert client.xlen("b:audit") == 5
    assert [h["version"] for h in flags.history()] == [12, 11, 10, 9, 8]
    # One entry is bounded too: a long reason is cut, large details replaced by a size.
    flags.update(lambda f: f, who="t", why="w" * 100_000, details={"blob": "x" * MIB})
    newest = flags.history(1)[0]
    assert len(newest["why"]) == MAX_AUDIT_TEXT_CHARS
    assert newest["details"] == {"truncated": True, "bytes": MIB + len('{"blob": ""}')}
    assert len(flags.read().reason) == MAX_AUDIT_TEXT_CHARS


def test_lane_metrics_hold_their_caps(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "LATENCY_CAP", 5)
    metrics = LaneMetrics(client, prefix="b:")
    for _ in range(12):
        metrics.record("v3", 0.001, None)
    assert client.zcard("b:latencies:v3") == 5
    windows = list(client.scan_iter(match="b:window:v3:*"))
    assert windows and all(0 < client.ttl(w) <= metrics_module.WINDOW_TTL for w in windows)
    with pytest.raises(InvalidArguments, match="unknown lane"):
        metrics.record("v4", 0.001, None)


def _documented_patterns() -> list[tuple[re.Pattern[str], str]]:
    """(key regex, bound) for each row of snakepool's key table in docs/redis-keys.md,
    exact names first (``shadow:counts`` before ``shadow:{request_id}``)."""
    rows = []
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|[^|]*\|[^|]*\|\s*([^|]+?)\s*\|", line)
        if match and match[1].startswith("{prefix}"):
            name = match[1].removeprefix("{prefix}")
            pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^ ]+", re.escape(f"b:{name}"))
            rows.append(("{" in name, re.compile(pattern), match[2]))
    return [(pattern, bound) for _, pattern, bound in sorted(rows, key=lambda r: r[0])]


def test_every_key_written_is_documented_with_its_bound(client: redis.Redis) -> None:
    store = SessionStore(client, prefix="b:")
    sid = store.create()
    store.put_program(sid, "p", {"signature": "q -> a"})
    store.bind(sid, "v2compat-1@host")
    flags = FlagStore(client, prefix="b:")
    flags.set_percent(5, who="t", why="t")
    recorder = ShadowRecorder(client, prefix="b:")
    recorder.record(pair("lone"), "primary", "v3", "ping", outcome_of({"pong": True}, None))
    recorder.record(pair("r"), "primary", "v3", "ping", outcome_of(1, None))
    recorder.record(pair("r"), "shadow", "v2compat", "ping", outcome_of(2, None))
    LaneMetrics(client, prefix="b:").record("v2compat", 0.01, None)
    assert ControllerLease(client, prefix="b:", holder="c", ttl=5).acquire()
    client.set("b:node:v3-1@host", "{}", ex=4)
    client.hset("b:commands", "ping", "{}")
    documented = _documented_patterns()
    assert len(documented) >= 14, "the key table of docs/redis-keys.md was not found"
    for raw in client.scan_iter(match="b:*"):
        key = raw.decode()
        bounds = [bound for pattern, bound in documented if pattern.fullmatch(key)]
        assert bounds, f"{key} is not in docs/redis-keys.md"
        if bounds[0].startswith("TTL"):
            assert client.ttl(key) > 0, f"{key} should have a TTL ({bounds[0]})"
        else:
            assert bounds[0].startswith(("cap", "pruned")), (key, bounds[0])
