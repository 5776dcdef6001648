"""A Redis restart without persistence never hands a caller a raw error (issue 9 item 6).

On a real redis-server (``--appendonly no``) that the test stops and starts while
requests are in flight, every caller of the public API gets a result or a typed error
of the ``SnakepoolError`` tree — never a redis, kombu or socket exception:

- a request whose message the restart wiped (accepted, never run) ends with
  ``ResultTimeout`` within its caller's timeout, not a hang;
- reads of a handle while Redis is down are ``PoolUnavailable``;
- requests running on real nodes across the restart resolve to their result; every
  other one to a typed error (``SessionNotFound``: the sessions went with the data).

Before the fix a router reading a V2-compat session's binding as Redis went away stored
a bare ``redis.exceptions.ConnectionError`` as the request's outcome (the chaos run:
about one request in 230), and reading a handle during the outage raised one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import states

from snakepool.errors import PoolUnavailable, ResultTimeout, SessionNotFound, SnakepoolError
from snakepool.tasks.client import Client
from tests.chaos.redis_process import RedisProcess
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ADAPTER = "tests.adapters.reliability"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _outcome(handle: Any, timeout: float) -> Any:
    """The value, or the typed error; a raw error fails the test with its type."""
    try:
        return handle.get(timeout=timeout)
    except SnakepoolError as exc:
        return exc


def test_a_request_wiped_by_the_restart_times_out_typed(server: RedisProcess) -> None:
    """No node runs: the messages wait in Redis, which loses them when it restarts."""
    client, direct = Client(redis_url=server.url), Client(redis_url=server.url, routing="direct")
    try:
        handles = [client.submit("ping"), direct.submit("ping")]
        server.stop()
        for handle in handles:
            with pytest.raises(PoolUnavailable) as raised:
                handle.state  # noqa: B018 - a read of the stored outcome
            assert raised.value.data["reason"] == "unreachable"
        with pytest.raises(PoolUnavailable):
            client.get_session("s-1")
        server.start()
        for handle in handles:
            started = time.monotonic()
            with pytest.raises(ResultTimeout) as timed_out:
                handle.get(timeout=2)
            assert time.monotonic() - started < 4
            assert timed_out.value.data["task_id"] == handle.id
            assert handle.state == states.PENDING  # the message is gone with the data
        with pytest.raises(ResultTimeout):
            client.execute("ping", timeout=1)  # no node: a typed wait, not a hang
    finally:
        client.close()
        direct.close()


def test_requests_in_flight_across_a_restart_resolve_typed(
    server: RedisProcess, tmp_path: Path
) -> None:
    cluster = Cluster(server.url, tmp_path, adapter=ADAPTER, pool_size=2)
    client, direct = Client(redis_url=server.url), Client(redis_url=server.url, routing="direct")
    try:
        for lane, name in (("router", "router-1"), ("v3", "v3-1"), ("v2compat", "v2-1")):
            cluster.start(lane, name)
        client.wait_for_flags(client.set_rollout(50, "restart test")["version"])
        sessions = [client.create_session() for _ in range(4)]
        log = tmp_path / "starts.log"
        handles = []
        for i in range(16):  # router and zero-hop, half in sessions (the router's binding read)
            args = {"id": f"r{i}", "seconds": 1.5, "log": str(log)}
            via = (client, direct)[i % 2]
            session = sessions[i % 4] if i % 4 < 2 else None
            handles.append(via.submit("tick", args, session_id=session))
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline, "no request started"
            time.sleep(0.05)  # the start log is a file: nothing to wait on
        running = {line.split()[0] for line in log.read_text().splitlines()}
        server.stop()
        time.sleep(1.0)  # the outage itself: the running requests finish meanwhile
        server.start()
        # A raw error raised by ``get`` fails the test here, with its own type.
        # Those queued when Redis stopped are gone with its data: ResultTimeout, so the
        # waits share one deadline.
        until = time.monotonic() + 10  # the running ones end ~1 s after the restart
        outcomes = {
            f"r{i}": _outcome(h, timeout=max(0.2, until - time.monotonic()))
            for i, h in enumerate(handles)
        }
        for request_id in running:  # ran across the restart: its node stored the result
            assert outcomes[request_id] == {"id": request_id, "slept": pytest.approx(1.5, abs=1)}
        typed = (PoolUnavailable, ResultTimeout, SessionNotFound)
        assert all(isinstance(o, (dict, *typed)) for o in outcomes.values()), outcomes
        assert client.execute("ping", timeout=20)["pong"] is True  # and served again
        assert all(node.process.poll() is None for node in cluster.nodes)
    finally:
        client.close()
        direct.close()
        leftovers = cluster.stop()
    assert leftovers == [], f"processes left behind: {leftovers}"
