"""Operating the migration against real nodes: go/no-go, report, operation-specific
rollout, finalize, and the CLI's rough edges (issue 11 items 3-6 and 10).

One cluster for the module (a router, a V3 and a V2-compat node, one interpreter each,
on a real redis-server); each test resets the rollout flags first. The last test stops
the V3 node (and starts it again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner

from snakepool.config.flags import RolloutFlags
from snakepool.errors import InvalidArguments
from snakepool.sessions import redis_from_url
from snakepool.tasks.cli import main
from snakepool.tasks.client import Client
from snakepool.tasks.worker.node_facts import snakepool_version
from snakepool.tasks.worker.retirement import v2compat_backlog
from tests.integration.cluster import ROOT, Cluster, change_flags, set_percent, three_lanes

pytest.importorskip("dspy")
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

QA = {"signature": "question -> answer"}
ADAPTER = "tests.adapters.cluster"


@pytest.fixture(scope="module")
def cluster(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(redis_server, tmp_path_factory.mktemp("ops"), adapter=ADAPTER, pool_size=1)
    with three_lanes(cluster, "ops") as started:
        yield started


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    client = Client(redis_url=cluster.redis_url)
    change_flags(client, lambda _: RolloutFlags())
    yield client
    client.close()


def snakepool(cluster: Cluster, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns),
             "SNAKEPOOL_REDIS_URL": cluster.redis_url, "SNAKEPOOL_ADAPTER": ADAPTER},
    )  # fmt: skip


def flat(text: str) -> str:
    """The output with its line wrapping undone."""
    return " ".join(text.split())


def lane_of(client: Client, command: str, args: dict[str, Any], **kwargs: Any) -> str:
    result = client.submit(command, args, **kwargs)
    result.get(timeout=30)
    return str(result.queue)


def reset_figures(client: Client) -> None:
    """Forget every lane and shadow figure (the report starts from zero)."""
    for pattern in ("metrics:*", "latency:*", "window:*", "shadow:*"):
        stale = list(client.redis.scan_iter(match=f"{client.keys.prefix}{pattern}"))
        if stale:
            client.redis.delete(*stale)


def test_check_passes_on_a_healthy_stack(client: Client, cluster: Cluster) -> None:
    done = snakepool(cluster, "check", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["ok"] is True
    items = {item["name"]: item for item in report["items"]}
    assert list(items) == [
        "settings", "redis", "flags", "adapter", "router", "v3", "v2compat", "versions",
    ]  # fmt: skip
    assert all(item["ok"] for item in items.values()), items
    assert "v3-ops@" in items["v3"]["detail"] and "v2-ops@" in items["v2compat"]["detail"]
    assert items["adapter"]["detail"].startswith(ADAPTER)
    assert f"3 node(s) on {snakepool_version()}" in items["versions"]["detail"]
    table = snakepool(cluster, "check", columns=80)
    assert table.returncode == 0 and flat(table.stdout).endswith("go")
    assert "…" not in table.stdout


def test_status_is_readable_at_80_columns(client: Client, cluster: Cluster) -> None:
    reset_figures(client)  # no latency yet: printed as an en dash, not None
    done = snakepool(cluster, "status", columns=80)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout and "None" not in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())
    assert "\N{EN DASH}" in done.stdout
    for node in cluster.nodes:
        assert node.name in done.stdout


def test_report_json_matches_the_traffic_sent(client: Client, cluster: Cluster) -> None:
    reset_figures(client)
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        set_percent(client, 100)
        assert [lane_of(client, "calculate", {"expression": f"{i} + 1"}) for i in range(7)] == (
            ["v3"] * 7
        )
        assert [lane_of(direct, "calculate", {"expression": "2"}) for _ in range(3)] == ["v3"] * 3
        set_percent(client, 0)
        for i in range(5):
            assert client.execute("calculate", {"expression": f"{i} * 2"}) == {"result": i * 2}
        for _ in range(2):
            with pytest.raises(InvalidArguments):
                client.execute("calculate", {"expression": "1 +"})
        client.wait_for_flags(client.set_shadow(True, 1.0)["version"])
        assert [lane_of(client, "ping", {}) for _ in range(4)] == ["v2compat"] * 4
        deadline = time.monotonic() + 30
        while client.shadows.counts()["compared"] < 4:  # the copies run asynchronously
            assert time.monotonic() < deadline, client.shadows.counts()
            time.sleep(0.05)
        client.wait_for_flags(client.set_shadow(False)["version"])
        client.rollback("report test: p99 doubled")
    finally:
        direct.close()
    done = snakepool(cluster, "report", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    v3, v2 = report["lanes"]["v3"], report["lanes"]["v2compat"]
    assert {k: v3[k] for k in ("requests", "routed", "shadow_copies", "ok", "errors")} == {
        "requests": 14, "routed": 10, "shadow_copies": 4, "ok": 14, "errors": 0,
    }  # fmt: skip
    assert v3["client_errors"] == 0 and v3["success_rate"] == 1.0
    assert {k: v2[k] for k in ("requests", "routed", "ok", "errors", "client_errors")} == {
        "requests": 11, "routed": 11, "ok": 9, "errors": 0, "client_errors": 2,
    }  # fmt: skip
    assert v2["success_rate"] == pytest.approx(9 / 11)
    assert v3["p50_ms"] > 0 and v3["p99_ms"] >= v3["p50_ms"]
    assert report["traffic"]["routed"] == 21
    assert report["traffic"]["share"] == {
        "v3": pytest.approx(10 / 21), "v2compat": pytest.approx(11 / 21),
    }  # fmt: skip
    assert report["shadow"] == {"compared": 4, "matched": 4, "mismatched": 0, "match_rate": 1.0}
    last = report["rollbacks"][-1]
    assert (last["why"], last["kind"], last["to_percent"]) == (
        "report test: p99 doubled", "rollback", 0,
    )  # fmt: skip
    assert abs(last["at"] - time.time()) < 120
    nodes = {n["name"].split("@")[0]: n for n in report["nodes"]}
    assert {nodes[n]["interpreters"] for n in ("v3-ops", "v2-ops")} == {1}
    assert all(nodes[n]["rss_bytes"] > 1_000_000 for n in ("v3-ops", "v2-ops"))
    assert nodes["router-ops"]["interpreters"] == 0
    assert {n["version"] for n in report["nodes"]} == {snakepool_version()}
    assert report["rollout"]["percent"] == 0 and report["rollout"]["paused"] is True
    text = snakepool(cluster, "report", columns=80)
    assert "…" not in text.stdout and "report test: p99 doubled" in flat(text.stdout)


def test_exclude_moves_one_command_back_within_a_second(client: Client, cluster: Cluster) -> None:
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        set_percent(client, 100)
        for via in (client, direct):  # warm: both route by the current flags
            assert lane_of(via, "calculate", {"expression": "1"}) == "v3"
        done = snakepool(cluster, "rollout", "exclude", "calculate", "--reason", "wrong on V3")
        assert done.returncode == 0, done.stdout + done.stderr
        changed = client.flags.history(1)[0]
        assert changed["why"] == "wrong on V3"
        # Every request sent from one second after the change on goes to V2-compat.
        time.sleep(max(0.0, changed["at"] + 1.0 - time.time()))
        for via in (client, direct):
            lanes = [lane_of(via, "calculate", {"expression": f"{i}"}) for i in range(5)]
            assert lanes == ["v2compat"] * 5
            assert lane_of(via, "ping", {}) == "v3"  # only that command moved
        state = client.rollout_state()
        assert state["excluded_commands"] == ["calculate"] and state["v3_commands"] is None
        assert (
            snakepool(cluster, "rollout", "include", "calculate", "--reason", "ok").returncode == 0
        )
        time.sleep(max(0.0, client.flags.history(1)[0]["at"] + 1.0 - time.time()))
        for via in (client, direct):
            assert lane_of(via, "calculate", {"expression": "1"}) == "v3"
    finally:
        direct.close()


def finalize(cluster: Cluster) -> tuple[int, str]:
    done = snakepool(cluster, "rollout", "finalize", "--reason", "the migration is over")
    return done.returncode, flat(done.stdout + done.stderr)


def test_finalize_refuses_each_reason_then_succeeds(client: Client, cluster: Cluster) -> None:
    sid = client.create_session()
    change_flags(client, lambda f: replace(f, percent=50, overrides={sid: "v2compat"}))
    code, out = finalize(cluster)
    assert code == 1 and "cannot finalize" in out and "at 50 %, not 100 %" in out
    set_percent(client, 100)
    client.flags.set_paused(True, who="test", why="looking")
    code, out = finalize(cluster)
    assert code == 1 and "paused" in out and "at 50" not in out
    client.flags.set_paused(False, who="test", why="looked")
    change_flags(client, lambda f: replace(f, forced_lane="v2compat"))
    code, out = finalize(cluster)
    assert code == 1 and "forced to v2compat" in out
    change_flags(client, lambda f: replace(f, forced_lane=None))

    # A program only a V2-compat interpreter holds (its store write lost).
    created = client.submit("create_program", {"id": "qa", **QA}, session_id=sid)
    assert created.get(timeout=60)["program_id"] == "qa" and created.queue == "v2compat"
    definition = client.store.get_program(sid, "qa")
    assert definition is not None
    client.redis.hdel(client.keys.programs(sid), "qa")
    code, out = finalize(cluster)
    assert code == 1 and "not in the store" in out and f"{sid} (qa)" in out
    client.store.put_program(sid, "qa", definition)

    # Requests queued and in flight on V2-compat (one interpreter: they run in turn).
    sleeping = [client.submit("sleep", {"seconds": 2}, session_id=sid) for _ in range(3)]
    broker = redis_from_url(cluster.redis_url)
    deadline = time.monotonic() + 10
    while sum(v2compat_backlog(broker)) < 2:  # the router has handed them over
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, out = finalize(cluster)
    assert code == 1 and "the v2compat queue is not empty" in out
    for result in sleeping:
        result.get(timeout=60)
    assert {r.queue for r in sleeping} == {"v2compat"}

    # An excluded command would silently go to V3 once finalized: refused, naming it.
    exclude = snakepool(cluster, "rollout", "exclude", "calculate", "--reason", "kept on V2")
    assert exclude.returncode == 0
    code, out = finalize(cluster)
    assert code == 1 and "kept on V2-compat: calculate" in out
    include = snakepool(cluster, "rollout", "include", "calculate", "--reason", "ready")
    assert include.returncode == 0
    code, out = finalize(cluster)
    assert code == 0, out
    assert "finalized" in out and "V2-compat nodes can be stopped" in out
    state = client.rollout_state()
    assert state["finalized"] is True
    client.wait_for_flags(state["version"])
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        for via in (client, direct):  # the session's override included
            assert via.decide("calculate", session_id=sid) == "v3"
            assert lane_of(via, "calculate", {"expression": "2"}, session_id=sid) == "v3"
            ask = {"program_id": "qa", "inputs": {"question": "Why?"}}
            answer = via.submit("execute_program", ask, session_id=sid)
            assert "answer" in answer.get(timeout=60) and answer.queue == "v3"
    finally:
        direct.close()
    refused = snakepool(cluster, "rollout", "set", "50", "--reason", "not now")
    assert refused.returncode == 2 and "unfinalize" in flat(refused.stdout)
    with pytest.raises(InvalidArguments, match="finalized"):
        client.rollback("too late")
    undone = snakepool(cluster, "rollout", "unfinalize", "--reason", "V2 needed again")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert client.rollout_state()["finalized"] is False
    client.wait_for_flags(client.flags.version())
    assert lane_of(client, "calculate", {"expression": "2"}, session_id=sid) == "v2compat"


def test_client_errors_are_one_info_line_in_a_nodes_log(client: Client, cluster: Cluster) -> None:
    marker = "an-unknown-command-for-the-log"
    with pytest.raises(Exception, match=marker):
        client.execute(marker)
    node = next(n for n in cluster.nodes if n.lane == "v2compat")
    deadline = time.monotonic() + 10
    while marker not in (log := node.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, "the client error was never logged"
        time.sleep(0.05)  # the node writes its log line after storing the result
    lines = [line for line in log.splitlines() if marker in line]
    assert (
        len(lines) == 1 and " INFO " in lines[0] and "raised expected: UnknownCommand" in lines[0]
    )
    assert "raised unexpected" not in log and "Traceback" not in log


def test_check_counts_no_frozen_node_and_names_it(client: Client, cluster: Cluster) -> None:
    router = next(n for n in cluster.nodes if n.lane == "router")
    heartbeat = client.keys.node(router.hostname)
    router.process.send_signal(signal.SIGSTOP)
    try:
        # Frozen with its registration still there (a heartbeat that has not expired).
        assert client.redis.persist(heartbeat)
        done = snakepool(cluster, "check", "--json")
        items = {item["name"]: item for item in json.loads(done.stdout)["items"]}
        assert done.returncode == 1 and not items["router"]["ok"]
        versions = items["versions"]
        assert versions["ok"], versions  # the two live nodes agree
        assert versions["detail"].startswith(f"2 node(s) on {snakepool_version()}")
        assert "not counted" in versions["detail"]
        assert f"{router.hostname} (heartbeat" in versions["detail"]
    finally:
        router.process.send_signal(signal.SIGCONT)
        client.redis.expire(heartbeat, 4)
    cluster.wait_ready(router)


def test_without_a_v3_consumer_check_and_call_name_v3(
    client: Client, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_percent(client, 100)
    v3 = next(n for n in cluster.nodes if n.lane == "v3")
    v3.process.send_signal(signal.SIGTERM)
    v3.process.wait(60)
    cluster.nodes.remove(v3)
    try:
        done = snakepool(cluster, "check", "--json")
        assert done.returncode == 1
        items = {item["name"]: item for item in json.loads(done.stdout)["items"]}
        assert not items["v3"]["ok"] and "no live consumer on v3" in items["v3"]["detail"]
        assert [n for n, i in items.items() if not i["ok"]] == ["v3"]
        table = snakepool(cluster, "check", columns=80)
        assert table.returncode == 1 and "no-go: v3 failed" in flat(table.stdout)

        monkeypatch.setenv("SNAKEPOOL_REDIS_URL", cluster.redis_url)
        monkeypatch.setenv("SNAKEPOOL_ADAPTER", ADAPTER)
        started = time.monotonic()
        called = CliRunner().invoke(main, ["call", "ping"], catch_exceptions=False)
        elapsed = time.monotonic() - started
        assert called.exit_code == 2 and "no live node serves v3" in flat(called.output)
        assert elapsed < 2.0
        broker = redis_from_url(cluster.redis_url)
        assert [broker.llen(q) for q in ("router", "v3", "v2compat")] == [0, 0, 0]
        as_user = snakepool(cluster, "call", "ping")
        assert as_user.returncode == 2 and "no live node serves v3" in flat(as_user.stdout)
        assert [broker.llen(q) for q in ("router", "v3", "v2compat")] == [0, 0, 0]
    finally:
        cluster.wait_ready(cluster.start("v3", "v3-ops", wait=False))
