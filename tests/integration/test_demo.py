"""`snakepool demo` and `snakepool up`, run as a user would run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

# A demo starts three nodes and runs a rollout: well over the default 60 s budget on a
# loaded machine, but never minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def snakepool(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepool.tasks.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **env},
    )  # fmt: skip


def test_demo_with_redis(redis_url: str) -> None:
    done = snakepool("demo", "-n", "60", env={"SNAKEPOOL_REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Redis answers at" in out and "with real worker nodes" in out
    assert "killed interpreter pid" in out  # the pool part: a crash survived
    for percent in ("0%", "10%", "50%", "100%"):
        assert f"demo step to {percent}" in out  # the audit trail
    assert "answered on V3" in out and "done: every node and interpreter stopped" in out


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
