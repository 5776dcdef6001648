"""`snakepool demo` and `snakepool up`, run as a user would run them."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from snakepool.config.flags import FlagStore
from snakepool.errors import UnknownCommand
from snakepool.tasks.client import Client
from tests.conftest import free_port

# A demo starts three nodes and runs a rollout: well over the default 60 s budget on a
# loaded machine, but never minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
#: A row of the demo's per-lane table: lane, requests.
PER_LANE_ROW = re.compile(r"^\W*(v3|v2compat)\W+(\d+)\W", re.MULTILINE)


def snakepool(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **env},
    )  # fmt: skip


def test_demo_with_redis(redis_url: str) -> None:
    demo_db = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/15")
    # What an earlier run left: the per-lane table must report this run only.
    demo_db.hset("snakepool-demo:metrics:v3", mapping={"requests": 100_000})
    demo_db.zadd("snakepool-demo:latencies:v3", {"99999.0:earlier": time.time()})
    # ...and its audit trail: the report shows this run's changes only, every one of them.
    earlier = FlagStore(demo_db, prefix="snakepool-demo:")
    for why in ("step one of last week", "step two of last week"):
        earlier.set_percent(30, who="earlier", why=why)
    # A CI container's host name can be 64 characters: the audit trail must still read.
    operator = "ci@" + "runner-" * 9
    env = {"SNAKEPOOL_REDIS_URL": redis_url, "SNAKEPOOL_OPERATOR": operator}
    done = snakepool("demo", "-n", "60", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Redis answers at" in out and "with real worker nodes" in out
    assert "killed interpreter pid" in out  # the pool part: a crash survived
    for percent in ("0%", "10%", "50%", "100%"):
        assert f"demo step to {percent}" in out  # the audit trail
    assert "answered on V3" in out and "done: every node and interpreter stopped" in out
    served = {lane: int(n) for lane, n in PER_LANE_ROW.findall(out)}
    # 40 sessions x 3 requests x 4 steps, plus with DSPy 40 programs and one answer.
    dspy = importlib.util.find_spec("dspy") is not None
    assert sum(served.values()) == 40 * 3 * 4 + (41 if dspy else 0), out
    assert "99999" not in out and "last week" not in out
    # Every result was deleted once read; nothing outside its database.
    assert list(demo_db.scan_iter(match="celery-task-meta-*")) == []
    main_db = redis.Redis.from_url(redis_url)
    assert list(main_db.scan_iter()) == []
    demo_db.close()
    main_db.close()


def test_demo_embedded_when_no_redis_answers() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    done = snakepool("demo", "-n", "60", env={"SNAKEPOOL_REDIS_URL": unreachable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running embedded" in done.stdout and "in-process worker" in done.stdout
    assert "demo step to 100%" in done.stdout and "answered on V3" in done.stdout


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive ports nobody listens on, below the ephemeral
    range (there, an outgoing connection may take the next port at any moment)."""
    import random
    import socket

    while True:
        first = random.randrange(20000, 32000 - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


def test_up_starts_the_stack_and_ctrl_c_stops_it() -> None:
    port, flower_port, metrics = free_port(), free_port(), free_ports_in_a_row(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "snakepool.tasks.cli", "up", "--pool-size", "1",
         "--flower-port", str(flower_port), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
             "SNAKEPOOL_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
    )  # fmt: skip
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    else:
        pytest.fail("".join(lines))
    output = "".join(lines)
    for name in ("redis", "router", "v3-1", "v2compat-1", "flower"):
        assert name in output
    assert f"started redis-server on port {port}" in output
    assert "rollout state: none yet (0% to V3, version 0)" in output
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{flower_port}/", timeout=2) as page:
                assert page.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # Flower is still binding its port
    # One metrics port per node: the router on --metrics-port, v3-1 on the next one.
    for number, name in enumerate(("router", "v3-1", "v2compat-1")):
        assert f"http://127.0.0.1:{metrics + number}/metrics" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics + number}/metrics") as page:
            text = page.read().decode()
        assert f'snakepool_node_info{{lanes="{name.split("-")[0]}",node="{name}@' in text
        assert ("snakepool_interpreters{" in text) is (name != "router")  # no pool there
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    process.stdout.close()
    assert process.returncode == 0 and "stopping" in rest


def test_up_reuses_a_running_redis_says_so_and_logs_a_client_error_in_one_line(
    redis_url: str,
) -> None:
    FlagStore(redis.Redis.from_url(redis_url)).set_percent(30, who="earlier", why="last week")
    process = subprocess.Popen(
        [sys.executable, "-m", "snakepool.tasks.cli", "up", "--pool-size", "1",
         "--flower-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120",
             "SNAKEPOOL_REDIS_URL": redis_url},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines)
        started = "".join(lines)
        assert f"Redis: {redis_url} already answers: using it (not started by up)" in started
        assert "rollout state found: 30% to V3 (version 1)" in started
        assert "by earlier ('last week')" in started
        client = Client(redis_url=redis_url)
        try:
            for _ in range(5):
                assert client.execute("ping")["pong"] is True
            with pytest.raises(UnknownCommand):
                client.execute("unknown-command-for-up")
        finally:
            client.close()
        deadline = time.monotonic() + 20
        while not any("unknown-command-for-up" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)  # the node logs it right after storing the result
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(90)
        reader.join(10)
        process.stdout.close()
    output = "".join(lines)
    assert process.returncode == 0, output
    logged = [line for line in output.splitlines() if "unknown-command-for-up" in line]
    assert len(logged) == 1 and " INFO " in logged[0] and "raised expected" in logged[0]
    assert "Traceback" not in output and "raised unexpected" not in output
    assert "succeeded in" not in output and " received" not in output  # no per-task lines
    assert "[tasks]" not in output and "SecurityWarning" not in output  # no banners
    serving = [line for line in output.splitlines() if "snakepool.node: node " in line]
    assert len(serving) == 3  # one line per node start
