"""Prometheus metrics and Flower rows from a real worker node, matched against the traffic sent.

One node serving every lane (router, V3, V2-compat) with ``--metrics-port``, on a real
redis-server; requests go through the router with the rollout at 100 % (all V3). The
``/metrics`` text is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from snakepool.errors import (
    CommandFailed,
    InvalidArguments,
    RequestTimeout,
    UnknownCommand,
    WorkerCrashed,
)
from snakepool.tasks.client import Client
from snakepool.tasks.worker.pipeline.retries import MAX_RETRIES
from tests.conftest import free_port
from tests.integration.cluster import Cluster, NodeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def node(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    cluster = Cluster(
        redis_server, tmp_path_factory.mktemp("observed"), adapter="tests.adapters.observed"
    )
    cluster.env["SNAKEPOOL_METRICS_PORT"] = str(free_port())
    try:
        node = cluster.start("all", "observed")
        node.metrics_port = int(cluster.env["SNAKEPOOL_METRICS_PORT"])  # type: ignore[attr-defined]
        node.cluster = cluster  # type: ignore[attr-defined]
        yield node
    finally:
        leftovers = cluster.stop()
    assert leftovers == [], leftovers


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("snakepool_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests(samples: Samples, **labels: str) -> float:
    return sum(
        v
        for (name, have), v in samples.items()
        if name == "snakepool_requests_total" and set(labels.items()) <= set(have)
    )


def wait_for(port: int, check: Any, timeout: float = 30.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never matched: {sorted(samples.items())[:80]}")
        time.sleep(0.1)  # a scrape is the only way to see the node's figures


def test_metrics_listen_on_this_host_only_by_default(node: NodeProcess) -> None:
    port: int = node.metrics_port  # type: ignore[attr-defined]
    listening = [
        c.laddr
        for c in psutil.Process(node.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert [address.ip for address in listening] == ["127.0.0.1"]  # METRICS_ADDRESS default


def test_metrics_match_the_traffic_sent(node: NodeProcess) -> None:
    port: int = node.metrics_port  # type: ignore[attr-defined]
    client = Client(redis_url=node.cluster.redis_url)  # type: ignore[attr-defined]
    try:
        version = client.set_rollout(100, "all to V3")["version"]
        client.wait_for_flags(version)
        for i in range(4):
            assert client.execute("calculate", {"expression": f"{i} + 1"}) == {"result": i + 1}
        for _ in range(2):
            with pytest.raises(InvalidArguments):
                client.execute("calculate", {"expression": "1 / 0"})
        with pytest.raises(UnknownCommand):
            client.execute("no_such_command")
        with pytest.raises(CommandFailed):
            client.execute("fail")
        with pytest.raises(WorkerCrashed):
            client.execute("crash")
        with pytest.raises(RequestTimeout):
            client.submit("sleep", {"seconds": 30}, timeout=1).get(timeout=30)
        client.redis.zadd(client.keys.dead_letter_index, {"a": 1, "b": 2, "c": 3})

        # `sleep` is idempotent: the lane retried it MAX_RETRIES times (one request,
        # 1 + MAX_RETRIES timeouts). Every lost interpreter is replaced: all idle again.
        timeouts = 1 + MAX_RETRIES
        samples = wait_for(
            port,
            lambda s: (
                value(s, "snakepool_interpreters", node=node.hostname, state="idle") == 2
                and value(s, "snakepool_interpreter_starts_total", node=node.hostname)
                == 2 + 1 + timeouts
            ),
        )
        assert requests(samples, lane="v3", command="calculate", outcome="ok") == 4
        assert requests(samples, lane="v3", command="calculate", outcome="client_error",
                        error_type="InvalidArguments") == 2  # fmt: skip
        assert requests(samples, lane="v3", command="other", outcome="client_error",
                        error_type="UnknownCommand") == 1  # fmt: skip
        for command, error_type in (("fail", "CommandFailed"), ("crash", "WorkerCrashed"),
                                    ("sleep", "RequestTimeout")):  # fmt: skip
            assert requests(samples, lane="v3", command=command, outcome="server_error",
                            error_type=error_type) == 1, command  # fmt: skip
        assert requests(samples, lane="v2compat") == 0 and requests(samples) == 10
        assert value(samples, "snakepool_request_duration_seconds_count", lane="v3") == 10
        assert value(samples, "snakepool_request_duration_seconds_sum", lane="v3") >= 1.0  # type: ignore[operator]
        assert not any("no_such_command" in str(labels) for _, labels in samples)

        hostname = node.hostname
        assert value(samples, "snakepool_pool_size", node=hostname) == 2
        assert value(samples, "snakepool_interpreters", node=hostname, state="busy") == 0
        assert value(samples, "snakepool_interpreters", node=hostname, state="starting") == 0
        assert value(samples, "snakepool_queued_requests", node=hostname) == 0
        assert value(samples, "snakepool_interpreter_crashes_total", node=hostname) == 1
        assert value(samples, "snakepool_interpreter_timeouts_total", node=hostname) == timeouts
        assert value(samples, "snakepool_interpreter_recycles_total", node=hostname) == 0

        assert value(samples, "snakepool_rollout_percent") == 100
        assert value(samples, "snakepool_rollout_flags_version") == version
        assert value(samples, "snakepool_rollout_state", state="complete") == 1
        assert value(samples, "snakepool_rollout_state", state="rolling") == 0
        assert value(samples, "snakepool_breaker_open", lane="v3") == 0
        # The three added here, and any an earlier test left in this worker's Redis.
        held = client.redis.zcard(client.keys.dead_letter_index)
        assert held >= 3 and value(samples, "snakepool_dead_letters") == held
        info = [labels for name, labels in samples if name == "snakepool_node_info"]
        assert dict(info[0])["lanes"] == "router,v3,v2compat"

        # A rollback shows at once (the flag cache's 0.5 s), paused.
        client.rollback("test")
        wait_for(port, lambda s: value(s, "snakepool_rollout_state", state="paused") == 1)
        assert value(scrape(port), "snakepool_rollout_percent") == 0
    finally:
        client.close()


def test_exclusions_allow_list_and_finalized_are_exported(node: NodeProcess) -> None:
    port: int = node.metrics_port  # type: ignore[attr-defined]
    client = Client(redis_url=node.cluster.redis_url)  # type: ignore[attr-defined]

    def change(**fields: Any) -> None:
        flags = client.flags.update(lambda f: replace(f, **fields), who="test", why="test")
        client.wait_for_flags(flags.version)

    try:
        change(percent=100, paused=False, forced_lane=None, excluded_commands=("fail", "crash"),
               v3_commands=("calculate", "ping"))  # fmt: skip
        samples = wait_for(port, lambda s: value(s, "snakepool_rollout_excluded_commands") == 2)
        for command in ("crash", "fail"):
            assert value(samples, "snakepool_rollout_command_excluded", command=command) == 1
        assert value(samples, "snakepool_rollout_v3_allow_list") == 1
        assert value(samples, "snakepool_rollout_v3_only_commands") == 2
        for command in ("calculate", "ping"):
            assert value(samples, "snakepool_rollout_v3_only", command=command) == 1
        assert value(samples, "snakepool_rollout_finalized") == 0
        assert value(samples, "snakepool_rollout_state", state="complete") == 1

        change(excluded_commands=(), v3_commands=None, finalized=True)
        samples = wait_for(port, lambda s: value(s, "snakepool_rollout_finalized") == 1)
        assert value(samples, "snakepool_rollout_state", state="finalized") == 1
        assert value(samples, "snakepool_rollout_state", state="complete") == 0  # told apart
        assert value(samples, "snakepool_rollout_percent") == 100
        assert value(samples, "snakepool_rollout_excluded_commands") == 0
        assert value(samples, "snakepool_rollout_v3_allow_list") == 0
        assert not [n for n, _ in samples if n in ("snakepool_rollout_command_excluded",
                                                   "snakepool_rollout_v3_only")]  # fmt: skip
    finally:
        change(finalized=False)
        change(percent=0)
        client.close()


def test_shadow_comparisons_are_counted_by_result(node: NodeProcess) -> None:
    port: int = node.metrics_port  # type: ignore[attr-defined]
    client = Client(redis_url=node.cluster.redis_url)  # type: ignore[attr-defined]
    try:
        before = scrape(port)
        version = client.set_shadow(True, rate=1.0)["version"]
        client.wait_for_flags(version)
        for i in range(3):
            assert client.execute("echo", {"n": i}) == {"n": i}

        def compared(samples: Samples) -> float:
            return sum(
                v - before.get((name, labels), 0)
                for (name, labels), v in samples.items()
                if name == "snakepool_shadow_comparisons_total" and ("result", "matched") in labels
            )

        wait_for(port, lambda s: compared(s) == 3)
    finally:
        client.close()


def test_flower_shows_the_pool_figures_as_rows(node: NodeProcess) -> None:
    cluster: Cluster = node.cluster  # type: ignore[attr-defined]
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", cluster.redis_url, "flower",
         "--address=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=cluster.env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        page = ""
        while "snakepool_pool_idle" not in page:
            if time.monotonic() > deadline or flower.poll() is not None:
                raise AssertionError(f"Flower never showed the pool's rows:\n{page[-2000:]}")
            try:
                url = f"http://127.0.0.1:{port}/worker/{node.hostname}"
                with urllib.request.urlopen(url, timeout=10) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.2)  # Flower is still starting (or has not met the node yet)
        rows = dict(re.findall(r"<td>(snakepool_\w+)</td>\s*<td[^>]*>([^<]*)</td>", page))
        assert rows["snakepool_pool_idle"] == "2" and rows["snakepool_pool_size"] == "2"
        assert rows["snakepool_node"] == node.hostname
        assert rows["snakepool_lanes"] == "router,v3,v2compat"
        assert "{" not in "".join(rows.values()), rows  # no nested dict in any row
    finally:
        flower.terminate()
        flower.wait(15)
