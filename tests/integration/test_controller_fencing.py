"""Fencing with real processes on a real redis-server: a controller frozen (SIGSTOP) after
deciding and past its lease, a second `snakepool controller` that takes over and acts,
and the first, resumed, that cannot change the flags and goes back to standby."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.errors import CommandFailed
from snakepool.tasks.rollout.metrics import LaneMetrics
from tests.integration.test_controller_lease import Controller, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
LEASE_TTL = 1.0
DECIDED, GO = "fencing-test:decided", "fencing-test:go"

#: The first controller: a real RolloutController under a real lease, which, at its
#: first promotion, says what it decided and waits (where the test freezes it) before
#: applying it — a GC pause or a slow Redis between deciding and writing.
FIRST = f"""
import json, signal, sys, threading, time
import redis
from snakepool.config.flags import FlagStore
from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
from snakepool.tasks.rollout.lease import ControllerLease, controller_id
from snakepool.tasks.rollout.metrics import LaneMetrics

client = redis.Redis.from_url(sys.argv[1])
lease = ControllerLease(client, holder=controller_id(), ttl={LEASE_TTL})

class Pausing(RolloutController):
    paused = False
    def apply(self, decision, **options):
        if decision.action == "promote" and not self.paused:
            self.paused = True
            client.set("{DECIDED}", json.dumps(
                {{"holder": lease.holder, "token": lease.token, "target": decision.target}}))
            while not client.exists("{GO}"):
                time.sleep(0.01)
        return super().apply(decision, **options)

policy = ControllerPolicy(window_seconds=5, min_samples=5, bake_seconds=0, schedule=(10, 25, 50))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
Pausing(FlagStore(client), LaneMetrics(client), policy).run(
    interval=0.1, stop=stop, lease=lease, announce=lambda m: print(m, flush=True))
"""


class First:
    def __init__(self, redis_url: str, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", FIRST, redis_url], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def started(redis_url: str, tmp_path: Path) -> Iterator[list[First | Controller]]:
    processes: list[First | Controller] = []
    yield processes
    for process in processes:
        process.stop()
    assert all(p.process.poll() is not None for p in processes)


def test_a_controller_frozen_past_its_lease_cannot_change_the_flags_when_it_wakes(
    redis_url: str, tmp_path: Path, started: list[First | Controller]
) -> None:
    client = redis.Redis.from_url(redis_url)
    flags, metrics = FlagStore(client), LaneMetrics(client)
    lease_key = Keys().controller_lease
    flags.set_percent(10, who="test", why="first step")

    first = First(redis_url, tmp_path / "first.log")
    started.append(first)
    until(lambda: "acting" in first.output, 30, "the first controller acts")
    while not client.exists(DECIDED):  # healthy V3 traffic: it decides to promote
        for _ in range(10):
            metrics.record("v3", 0.002, None)
        time.sleep(0.05)
        assert first.process.poll() is None, first.output
    decided = json.loads(client.get(DECIDED))  # type: ignore[arg-type]
    assert decided["target"] == 25
    os.kill(first.process.pid, signal.SIGSTOP)  # frozen between deciding and writing
    until(lambda: client.get(lease_key) is None, LEASE_TTL + 10, "the frozen one's lease ends")

    second = Controller(redis_url, tmp_path / "second.log", lease_ttl=LEASE_TTL)
    started.append(second)
    until(lambda: "acting: controller" in second.output, 30, "the second takes over")
    second_id = client.get(lease_key).decode()  # type: ignore[union-attr]
    assert second_id != decided["holder"]
    deadline = time.monotonic() + 30
    while flags.read().percent != 0:  # V3 now fails: the second rolls back
        assert time.monotonic() < deadline, f"no rollback: {second.output}"
        for _ in range(10):
            metrics.record("v3", 0.002, CommandFailed("broken"))
        time.sleep(0.05)
    rolled_back = flags.read()
    assert rolled_back.paused and rolled_back.updated_by == "controller"
    entry = flags.history(1)[0]
    assert entry["details"]["controller"] == second_id
    assert entry["details"]["fence"] > decided["token"]  # a later acquisition, a larger token

    client.set(GO, 1)
    os.kill(first.process.pid, signal.SIGCONT)  # it wakes up and applies its promotion
    until(lambda: "refused: fencing token" in first.output, 30, "the first is refused")
    until(lambda: f"standby: controller {second_id} is acting" in first.output, 30,
          "the first stands by")  # fmt: skip
    assert f"fencing token {decided['token']} is stale" in first.output
    now = flags.read()
    assert (now.version, now.percent, now.paused) == (rolled_back.version, 0, True)
    history = flags.history(100)
    assert not any(e["details"].get("controller") == decided["holder"] for e in history)
    assert client.get(lease_key).decode() == second_id  # type: ignore[union-attr]
    assert first.process.poll() is None  # alive, standing by
    client.close()
