"""The whole system: real redis-server, real `snakepool worker` nodes, real Celery.

One cluster per module (router, two V3 nodes, two V2-compat nodes, each with a pool of
warm DSPy interpreters); each test resets the rollout flags first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from snakepool.config.flags import RolloutFlags
from snakepool.errors import CommandFailed, InvalidArguments, SessionNotFound, UnknownCommand
from snakepool.tasks.client import Client
from snakepool.tasks.rollout.metrics import LaneMetrics
from tests.conftest import free_port
from tests.integration.cluster import Cluster, change_flags, set_percent
from tests.integration.distributed_cluster import five_nodes, run_cli, wait_for_closed_breakers

pytest.importorskip("dspy")
# The module's cluster starts (and at the end stops) five nodes inside the first and last
# tests' budgets.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

QA = {"signature": "question -> answer"}


@pytest.fixture(scope="module")
def cluster(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with five_nodes(redis_server, tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    client = Client(redis_url=cluster.redis_url)
    change_flags(client, lambda _: RolloutFlags())
    wait_for_closed_breakers(client)
    yield client
    client.close()


def test_execute_through_router_and_zero_hop_on_both_lanes(
    client: Client, cluster: Cluster
) -> None:
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        for percent, lane in ((0, "v2compat"), (100, "v3")):
            set_percent(client, percent)
            for via in (client, direct):
                result = via.submit("calculate", {"expression": "6 * 7"})
                assert result.get(timeout=30) == {"result": 42}
                assert result.queue == lane
            assert client.decide("calculate") == lane
    finally:
        direct.close()


def test_hundred_concurrent_calculations(client: Client) -> None:
    set_percent(client, 50)
    expressions = [(f"{i} * 3 + 1", i * 3 + 1) for i in range(100)]
    with ThreadPoolExecutor(max_workers=25) as executor:
        results = list(
            executor.map(lambda e: client.execute("calculate", {"expression": e[0]}), expressions)
        )
    assert [r["result"] for r in results] == [expected for _, expected in expressions]


def test_percentage_split_stickiness_and_monotonic_moves(client: Client) -> None:
    sessions = [client.create_session() for _ in range(400)]

    def lanes_now() -> dict[str, str]:
        with ThreadPoolExecutor(max_workers=20) as executor:
            results = list(executor.map(lambda s: client.submit("ping", session_id=s), sessions))
        return {s: r.get(timeout=60) and r.queue for s, r in zip(sessions, results, strict=True)}

    set_percent(client, 50)
    at_50 = lanes_now()
    share = Counter(at_50.values())["v3"] / len(sessions)
    assert 0.35 <= share <= 0.65
    assert lanes_now() == at_50  # sticky: the same session, the same lane
    previous = None
    for percent in (10, 50, 100):
        set_percent(client, percent)
        current = lanes_now() if percent != 50 else at_50
        if previous is not None:
            moved_back = [s for s in sessions if previous[s] == "v3" and current[s] != "v3"]
            assert moved_back == []
        previous = current
    assert set(previous.values()) == {"v3"}


def test_programs_follow_a_session_from_v2compat_to_v3(client: Client) -> None:
    set_percent(client, 0)
    sid = client.create_session()
    created = client.submit("create_program", {"id": "qa", **QA}, session_id=sid)
    assert created.get(timeout=30)["program_id"] == "qa" and created.queue == "v2compat"
    args = {"program_id": "qa", "inputs": {"question": "What moves?"}}
    on_v2 = client.submit("execute_program", args, session_id=sid)
    v2_answer = on_v2.get(timeout=30)
    assert on_v2.queue == "v2compat" and v2_answer["answer"]
    set_percent(client, 100)
    on_v3 = client.submit("execute_program", args, session_id=sid)
    assert on_v3.get(timeout=30) == v2_answer and on_v3.queue == "v3"  # same result, new lane
    listed = client.execute("list_programs", session_id=sid)["programs"]
    assert [p["program_id"] for p in listed] == ["qa"]


def test_rollback_takes_effect_within_a_second_without_restarts(
    client: Client, cluster: Cluster
) -> None:
    pids = [node.process.pid for node in cluster.nodes]
    set_percent(client, 100)
    assert client.submit("ping").get(timeout=30) and client.decide("ping") == "v3"
    rolled_back_at = time.monotonic()
    client.rollback("test: error budget burnt")
    late = []
    while time.monotonic() - rolled_back_at < 1.6:
        sent_at = time.monotonic()
        result = client.submit("ping")
        result.get(timeout=30)
        if sent_at - rolled_back_at >= 1.0:
            late.append(result.queue)
    assert late and set(late) == {"v2compat"}
    assert [node.process.pid for node in cluster.nodes] == pids  # nobody restarted
    assert all(node.process.poll() is None for node in cluster.nodes)
    history = client.flags.history(1)[0]
    assert history["why"] == "test: error budget burnt" and history["new"]["percent"] == 0


def test_typed_errors_arrive_as_their_types(client: Client) -> None:
    for percent in (0, 100):
        set_percent(client, percent)
        with pytest.raises(UnknownCommand, match="unknown command 'nope'"):
            client.execute("nope")
        with pytest.raises(InvalidArguments, match="too large"):
            client.execute("calculate", {"expression": "9**9**9"})
        with pytest.raises(CommandFailed) as caught:
            client.execute("fail", {"message": "deliberate"})
        assert caught.value.remote_type == "ValueError"
        assert "deliberate" in caught.value.remote_traceback
        with pytest.raises(SessionNotFound):
            client.execute("ping", session_id="no-such-session")


def test_two_v3_nodes_share_the_queue(client: Client) -> None:
    set_percent(client, 100)
    results = [client.submit("sleep", {"seconds": 0.2}) for _ in range(16)]
    for result in results:
        result.get(timeout=60)
    assert {r.worker.split("@")[0] for r in results} == {"v3-a", "v3-b"}


def test_v2_affinity_and_rebinding_when_the_node_dies(client: Client, cluster: Cluster) -> None:
    set_percent(client, 0)
    sid = client.create_session()
    client.execute("create_program", {"id": "qa", **QA}, session_id=sid)
    served = [client.submit("get_stats", session_id=sid) for _ in range(6)]
    pids = {r.get(timeout=30)["pid"] for r in served}
    workers = {r.worker for r in served}
    assert len(pids) == 1 and len(workers) == 1  # one node, one interpreter
    bound = client.get_session(sid)["v2_node"]
    assert bound == workers.pop()
    victim = next(n for n in cluster.nodes if n.hostname == bound)
    replacement_lane, replacement_name = victim.lane, f"{victim.name}-r"
    cluster.kill(victim)
    try:
        deadline = time.monotonic() + 10
        while cluster.redis.exists(cluster.keys.node(bound)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the heartbeat expires: the router now sees the node gone
        args = {"program_id": "qa", "inputs": {"question": "Still there?"}}
        result = client.submit("execute_program", args, session_id=sid)
        assert result.get(timeout=30)["answer"]
        assert result.worker != bound
        assert client.get_session(sid)["v2_node"] == result.worker  # rebound
    finally:
        cluster.start(replacement_lane, replacement_name)


def test_client_v2_api_is_deprecated_but_works(client: Client) -> None:
    sid = client.create_session()
    with pytest.warns(DeprecationWarning, match="execute_in_session"):
        assert client.v2.execute_in_session(sid, "echo", {"a": 1}) == {"a": 1}
    with pytest.warns(DeprecationWarning, match="execute_anonymous"):
        assert client.v2.execute_anonymous("calculate", {"expression": "1+1"}) == {"result": 2}


def test_per_session_override_and_kill_switch(client: Client) -> None:
    sid = client.create_session()
    change_flags(client, lambda f: replace(f, percent=100, overrides={sid: "v2compat"}))
    pinned = client.submit("ping", session_id=sid)
    pinned.get(timeout=30)
    assert pinned.queue == "v2compat"
    change_flags(client, lambda f: replace(f, forced_lane="v3"))
    forced = client.submit("ping", session_id=sid)
    forced.get(timeout=30)
    assert forced.queue == "v3"


def test_status_json(client: Client, cluster: Cluster) -> None:
    client.execute("calculate", {"expression": "1+1"})
    done = run_cli(cluster, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    names = {node["name"].split("@")[0] for node in status["nodes"]}
    assert {"router-1", "v3-a", "v3-b"} <= names
    for node in status["nodes"]:
        if node["lanes"] != ["router"]:
            assert node["pool"]["size"] == 2 and {"idle", "busy", "requests"} <= set(node["pool"])
    for lane in ("v3", "v2compat"):
        assert {"requests", "errors", "p50_ms", "p99_ms"} <= set(status["lanes"][lane])
    assert status["lanes"]["v2compat"]["requests"] >= 1
    assert {"percent", "version"} <= set(status["rollout"])
    assert run_cli(cluster, "status").returncode == 0  # the table form too


def test_cli_rollout_sessions_and_call(client: Client, cluster: Cluster) -> None:
    done = run_cli(cluster, "rollout", "set", "30", "--reason", "cli step")
    assert done.returncode == 0, done.stderr
    assert client.rollout_state()["percent"] == 30
    assert run_cli(cluster, "rollout", "set", "130", "--reason", "typo").returncode != 0
    assert run_cli(cluster, "rollout", "rollback", "--reason", "cli back").returncode == 0
    assert client.rollout_state()["percent"] == 0
    history = json.loads(run_cli(cluster, "rollout", "history", "--json").stdout)
    assert [h["why"] for h in history[:2]] == ["cli back", "cli step"]
    assert run_cli(cluster, "rollout", "force", "v3", "--reason", "kill switch").returncode == 0
    assert client.rollout_state()["forced_lane"] == "v3"
    assert run_cli(cluster, "rollout", "force", "off", "--reason", "done").returncode == 0
    assert client.rollout_state()["forced_lane"] is None
    pinned = run_cli(cluster, "rollout", "override", "s-1", "v3", "--reason", "vip")
    assert pinned.returncode == 0 and client.rollout_state()["overrides"] == {"s-1": "v3"}
    run_cli(cluster, "rollout", "override", "s-1", "clear", "--reason", "done")
    assert client.rollout_state()["overrides"] == {}
    bad_id = run_cli(cluster, "rollout", "override", "bad id", "v3", "--reason", "x")
    assert bad_id.returncode == 2 and "invalid session id" in bad_id.stdout + bad_id.stderr
    sid = client.create_session()
    client.execute("create_program", {"id": "qa", **QA}, session_id=sid)
    assert sid in run_cli(cluster, "sessions", "list").stdout
    shown = run_cli(cluster, "sessions", "show", sid)
    assert shown.returncode == 0 and "question -> answer" in shown.stdout
    assert run_cli(cluster, "sessions", "delete", sid).returncode == 0
    assert client.get_session(sid) is None
    assert run_cli(cluster, "sessions", "show", sid).returncode == 1
    called = run_cli(cluster, "call", "calculate", '{"expression": "20 + 22"}')
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"lane": "v2compat", "result": {"result": 42}}
    bad = run_cli(cluster, "call", "calculate", '{"expression": "1/0"}')
    assert bad.returncode == 2 and "InvalidArguments" in bad.stdout


def test_pool_stats_in_celery_inspect_stats(cluster: Cluster) -> None:
    from celery import Celery

    app = Celery(broker=cluster.redis_url)
    try:
        stats = app.control.inspect(timeout=2).stats() or {}
    finally:
        app.close()
    v3 = next(v for k, v in stats.items() if k.startswith("v3-a@"))
    # Flat scalar keys, one row each on Flower's worker page (no nested dict).
    assert v3["snakepool_pool_size"] == 2 and v3["snakepool_lanes"] == "v3"
    assert v3["snakepool_node"].startswith("v3-a@") and "snakepool" not in v3


def test_flower_lists_the_nodes_and_tasks(client: Client, cluster: Cluster) -> None:
    import urllib.request

    port = free_port()
    env = {**cluster.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", cluster.redis_url, "flower",
         "--address=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 30
        workers: dict[str, Any] = {}
        while not {"v3-a", "v3-b", "router-1"} <= {w.split("@")[0] for w in workers}:
            if time.monotonic() > deadline:
                raise AssertionError(f"Flower never listed the nodes: {list(workers)}")
            try:
                workers = get("/api/workers?refresh=1")
            except OSError:
                time.sleep(0.2)  # not listening yet
        ids = {client.submit("ping").id for _ in range(3)}
        tasks: dict[str, Any] = {}
        while not ids <= set(tasks):
            if time.monotonic() > deadline:
                raise AssertionError("Flower never showed the tasks")
            tasks = get("/api/tasks")
            time.sleep(0.1)
        assert {tasks[i]["name"] for i in ids} <= {"snakepool.route", "snakepool.v3.execute",
                                                   "snakepool.v2compat.execute"}  # fmt: skip
    finally:
        flower.terminate()
        flower.wait(10)


def test_shadow_compares_both_lanes_without_touching_the_primary(
    client: Client, cluster: Cluster
) -> None:
    sid = client.create_session()
    client.execute("create_program", {"id": "qa", **QA}, session_id=sid)
    before = client.shadows.counts()
    change_flags(client, lambda f: replace(f, percent=0, shadow=True, shadow_rate=1.0))
    args = {"program_id": "qa", "inputs": {"question": "Shadowed?"}}
    direct = Client(redis_url=cluster.redis_url, routing="direct")
    try:
        for via in (client, direct):
            primary = via.submit("execute_program", args, session_id=sid)
            assert primary.get(timeout=30)["answer"] and primary.queue == "v2compat"
            via.submit("calculate", {"expression": "2 * 21"}).get(timeout=30)
            via.execute("create_program", {"id": "other", **QA}, session_id=sid)  # not read-only
    finally:
        direct.close()
    deadline = time.monotonic() + 15
    while client.shadows.counts()["compared"] < before["compared"] + 4:
        if time.monotonic() > deadline:
            raise AssertionError(f"shadow pairs not compared: {client.shadows.counts()}")
        time.sleep(0.05)  # the copies run asynchronously on the other lane
    after = client.shadows.counts()
    assert after["matched"] - before["matched"] == 4  # both lanes agreed every time
    assert client.get_session(sid)["v2_node"] is not None  # V3 shadows never rebound it


def test_controller_rolls_back_on_real_v3_errors(client: Client, cluster: Cluster) -> None:
    from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController

    set_percent(client, 100)
    for _ in range(30):
        with pytest.raises(CommandFailed):
            client.execute("fail")
    controller = RolloutController(
        client.flags, LaneMetrics(client.redis), ControllerPolicy(min_samples=20)
    )
    decision = controller.evaluate()
    assert decision.action == "rollback" and "V3 error rate" in decision.reason
    flags = controller.apply(decision)
    assert flags is not None and flags.percent == 0 and flags.paused
    client.wait_for_flags(flags.version)
    after = client.submit("ping")
    after.get(timeout=30)
    assert after.queue == "v2compat"
    entry = client.flags.history(1)[0]
    assert entry["who"] == "controller" and entry["details"]["snapshot"]["v3"]["errors"] >= 20


def test_retries_only_for_idempotent_commands(
    client: Client, tmp_path: pytest.TempPathFactory
) -> None:
    from snakepool.errors import WorkerCrashed

    set_percent(client, 100)
    assert client.execute("flaky_idempotent", {"marker": str(tmp_path / "a")})["pid"]
    with pytest.raises(WorkerCrashed) as caught:
        client.execute("flaky_unsafe", {"marker": str(tmp_path / "b")})
    assert caught.value.exit_code == 9


def test_v2compat_errors_carry_the_v2_classification(client: Client) -> None:
    set_percent(client, 0)
    with pytest.raises(InvalidArguments) as invalid:
        client.execute("calculate", {"expression": "1/0"})
    assert (invalid.value.v2_category, invalid.value.severity, invalid.value.retry_strategy) == (
        "validation_error", "info", "do_not_retry",
    )  # fmt: skip
    set_percent(client, 100)
    with pytest.raises(InvalidArguments) as on_v3:
        client.execute("calculate", {"expression": "1/0"})
    assert "v2_category" not in on_v3.value.data


def test_cli_bench_against_the_running_system(client: Client, cluster: Cluster) -> None:
    done = run_cli(cluster, "bench", "-n", "30", "--concurrency", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "router / zero-hop median latency" in done.stdout
    assert "direct" in done.stdout and "v2compat 30" in done.stdout  # 0 %: all on V2-compat
