"""``snakepool up`` when one of its nodes dies: the node is started again under its name
(as compose's ``restart: unless-stopped`` does), and the rest of the stack keeps running.
It used to stop everything — the other nodes and the Redis it started, with the rollout
state in it — the moment any node exited (review of issue 11: a node SIGKILLed while
/metrics was scraped took the whole stack down)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from snakepool import Client
from tests.integration.cluster import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


def _wait_for(lines: list[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        for line in list(lines):
            if found := re.search(pattern, line):
                return found
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{''.join(lines)}"
        time.sleep(0.05)


def test_a_killed_node_is_started_again_and_the_stack_stays_up(redis_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "snakepool.tasks.cli", "up", "--pool-size", "1",
         "--v2compat", "0", "--flower-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
             "SNAKEPOOL_REDIS_URL": redis_url},
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    client = Client(redis_url=redis_url)
    try:
        _wait_for(lines, "Ctrl-C stops everything", 120)
        pid = int(_wait_for(lines, r"│ v3-1\s+│ (\d+) +│ node", 1).group(1))
        os.kill(pid, signal.SIGKILL)
        _wait_for(lines, r"exited: v3-1 \(killed by SIGKILL\); started again", 10)
        # The new v3-1 serves (its log says so a second time) and requests go through.
        deadline = time.monotonic() + 90
        while sum("node v3-1@" in line and "serving v3" in line for line in lines) < 2:
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        assert client.execute("ping", timeout=30)["pong"] is True
        assert process.poll() is None, "".join(lines)  # up is still running
        output = "".join(lines)
        assert "stopping the rest" not in output and "stopping…" not in output
    finally:
        client.close()
        process.send_signal(signal.SIGINT)
        process.wait(90)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == 0, "".join(lines)


def test_a_node_that_cannot_stay_up_stops_the_stack_after_three_restarts() -> None:
    from snakepool.tasks.cli.up import NODE_RESTARTS, _watch
    from snakepool.tasks.local.launcher import Launcher

    launcher = Launcher({**os.environ}, stop_grace=5)
    restarted: list[str] = []
    real_restart = launcher.restart

    def counted(managed: Any) -> Any:
        restarted.append(managed.exit_description())
        return real_restart(managed)

    launcher.restart = counted  # type: ignore[method-assign]
    with launcher:
        launcher._spawn("node", "exits-at-once", [sys.executable, "-c", "raise SystemExit(3)"])
        started = time.monotonic()
        _watch(launcher, threading.Event())  # returns: up then stops everything
        assert time.monotonic() - started < 30
    assert restarted == ["exit code 3"] * NODE_RESTARTS
