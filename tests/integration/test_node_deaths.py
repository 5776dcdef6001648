"""Nodes SIGKILLed on real processes: nothing lost, poison dead-lettered (issue 9: 1, 3, 4).

Real redis-server, real ``snakepool worker`` nodes (``cluster.py``) running the
``tests.adapters.node_chaos`` adapter. Each test starts its own small cluster (its
nodes die) and checks that no interpreter, template or node process is left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.result import AsyncResult
from click.testing import CliRunner

from snakepool.errors import DeadLettered
from snakepool.tasks.cli import main
from snakepool.tasks.client import Client
from tests.integration.node_chaos import ResultWatch, chaos_cluster, runs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

QA = {"id": "qa", "signature": "question -> answer"}


@pytest.fixture
def clients(redis_url: str) -> Iterator[tuple[Client, Client]]:
    """A router client and a zero-hop one."""
    router, direct = Client(redis_url=redis_url), Client(redis_url=redis_url, routing="direct")
    yield router, direct
    router.close()
    direct.close()


def _rollout(client: Client, percent: int) -> None:
    client.wait_for_flags(client.set_rollout(percent, f"test {percent}")["version"])


@pytest.mark.timeout(90)
def test_a_v2_session_whose_node_dies_is_answered_by_another_within_10_s(
    redis_url: str, tmp_path: Path, clients: tuple[Client, Client]
) -> None:
    client, _ = clients
    nodes = (("router", "router-1"), ("v2compat", "v2-a"), ("v2compat", "v2-b"))
    with chaos_cluster(redis_url, tmp_path, *nodes) as (cluster, started):
        _rollout(client, 0)
        sid = client.create_session()
        client.execute("create_program", QA, session_id=sid)
        args = {"program_id": "qa", "inputs": {"question": "What survives a node?"}}
        before = client.submit("execute_program", args, session_id=sid)
        answer = before.get(timeout=30)
        bound = client.get_session(sid)["v2_node"]
        assert answer["answer"] and bound == before.worker
        victim = next(n for n in started if n.hostname == bound)
        cluster.kill(victim)
        killed = time.monotonic()
        after = client.submit("execute_program", args, session_id=sid)
        # Its heartbeat has not expired yet: the router sent it to the dead node's
        # worker-direct queue, where nobody will ever consume it.
        assert cluster.redis.exists(cluster.keys.node(bound))
        assert after.get(timeout=10) == answer  # the same program, rebuilt from the store
        answered = time.monotonic() - killed
        print(f"the session's request was answered {answered:.1f} s after its node's death")
        assert answered <= 10
        assert after.worker != bound and after.queue == "v2compat"
        assert client.get_session(sid)["v2_node"] == after.worker  # rebound
        assert cluster.redis.llen(f"{bound}.dq2") == 0


@pytest.mark.timeout(120)
def test_a_v3_node_killed_while_running_requests_loses_nothing(
    redis_url: str, tmp_path: Path, clients: tuple[Client, Client]
) -> None:
    router, direct = clients
    notes = tmp_path / "notes"
    notes.mkdir()
    nodes = (("router", "router-1"), ("v3", "v3-a"), ("v3", "v3-b"))
    watch = ResultWatch(redis_url)
    try:
        with chaos_cluster(redis_url, tmp_path, *nodes) as (cluster, started):
            _rollout(router, 100)
            victim = started[1]
            sent = {
                f"{via}-{n}": client.submit("note", {"dir": str(notes), "key": f"{via}-{n}",
                                                     "seconds": 1.5})
                for n in range(6) for via, client in (("router", router), ("direct", direct))
            }  # fmt: skip
            wait_for(lambda: any(victim.process.pid in r for r in runs(notes).values()), 30,
                     "the victim to start a request")  # fmt: skip
            cluster.kill(victim)
            killed = time.monotonic()
            answers = {key: result.get(timeout=45) for key, result in sent.items()}
            ran = runs(notes)
            interrupted = [key for key, pids in ran.items() if victim.process.pid in pids]
            assert interrupted
            for key, answer in answers.items():
                assert answer == {"key": key, "node": ran[key][-1]}
                assert ran[key][-1] != victim.process.pid  # the last run was elsewhere
                assert ran[key].count(victim.process.pid) <= 1
            # One stored result per task id, however many runs it took.
            wait_for(lambda: all(watch.counts()[r.id] for r in sent.values()), 10, "results")
            counts = watch.counts()
            assert {counts[r.id] for r in sent.values()} == {1}
            recovery = max(watch.first_final[sent[key].id] for key in interrupted) - killed
            print(f"recovered {len(interrupted)} interrupted requests in {recovery:.1f} s")
            assert recovery <= 30
            assert sum(len(pids) - 1 for pids in ran.values()) == len(interrupted)
    finally:
        watch.close()


@pytest.mark.timeout(150)
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_poison_request_is_dead_lettered_after_three_deaths_and_retried(
    redis_url: str, tmp_path: Path, clients: tuple[Client, Client]
) -> None:
    router, direct = clients
    spare = tmp_path / "spare"
    # One request at a time per node: only the poison is running when its node dies.
    nodes = tuple(("v3", f"v3-{n}") for n in "abcd")
    with chaos_cluster(redis_url, tmp_path, *nodes, pool_size=1) as (_cluster, started):
        _rollout(router, 100)
        normal = [direct.submit("calculate", {"expression": f"{n} * 2"}) for n in range(10)]
        poison = direct.submit("kill_node", {"spare_if": str(spare)})
        sent = time.monotonic()
        normal += [direct.submit("calculate", {"expression": f"{n} * 2"}) for n in range(10, 30)]
        with pytest.raises(DeadLettered) as caught:
            poison.get(timeout=90)
        print(f"dead-lettered after 3 node deaths in {time.monotonic() - sent:.1f} s")
        error = caught.value
        dead = [n for n in started if n.process.poll() is not None]
        assert len(dead) == 3 and all(n.process.returncode == -9 for n in dead)
        assert error.deliveries == 3 and error.task_id == poison.id
        assert sorted(error.nodes) == sorted(n.hostname for n in dead)
        assert [r.get(timeout=30) for r in normal] == [{"result": n * 2} for n in range(30)]
        cli = CliRunner(env={"SNAKEPOOL_REDIS_URL": redis_url})
        listed = cli.invoke(main, ["deadletter", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        [letter] = json.loads(listed.output)
        assert (letter["task_id"], letter["command"], letter["deliveries"]) == (
            poison.id, "kill_node", 3,
        )  # fmt: skip
        shown = cli.invoke(main, ["deadletter", "show", poison.id])
        assert shown.exit_code == 0, shown.output
        history = json.loads(shown.output)["history"]
        assert [h["node"] for h in history] == error.nodes
        spare.touch()  # the retry runs it to the end
        retried = cli.invoke(main, ["deadletter", "retry", poison.id])
        assert retried.exit_code == 0, retried.output
        [survivor] = [n for n in started if n.process.poll() is None]
        rerun = AsyncResult(poison.id, app=direct.app).get(timeout=30)
        assert rerun == {"spared": True, "node": survivor.process.pid}
        assert json.loads(cli.invoke(main, ["deadletter", "list", "--json"]).output) == []
