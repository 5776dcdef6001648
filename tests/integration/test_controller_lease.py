"""Two real `snakepool controller` processes on a real redis-server: one acts, the other
stands by and says so; SIGKILL the acting one and the other takes over within the lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from snakepool.config.flags import FlagStore
from snakepool.config.keys import Keys
from snakepool.tasks.rollout.metrics import LaneMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
LEASE_TTL = 1.5


class Controller:
    def __init__(self, redis_url: str, log: Path, lease_ttl: float) -> None:
        self.log = log
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SNAKEPOOL_REDIS_URL": redis_url,
            "SNAKEPOOL_ROLLOUT_INTERVAL": "0.2",
            "SNAKEPOOL_ROLLOUT_LEASE_TTL": str(lease_ttl),
            "SNAKEPOOL_ROLLOUT_BAKE_SECONDS": "1",
            "SNAKEPOOL_ROLLOUT_WINDOW": "1",
            "SNAKEPOOL_ROLLOUT_MIN_SAMPLES": "5",
        }
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "snakepool.tasks.cli", "controller"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def until(check: Callable[[], object], timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll Redis or a log (there is no event to wait on across processes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(poll)


@pytest.fixture
def controllers(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(name: str, lease_ttl: float = LEASE_TTL) -> Controller:
        controller = Controller(redis_url, tmp_path / f"{name}.log", lease_ttl)
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


def promoted_by(client: redis.Redis, flags: FlagStore, percent_from: int) -> str:
    """Feed V3 healthy samples until a controller promotes from ``percent_from``; its id."""
    metrics = LaneMetrics(client)
    deadline = time.monotonic() + 30
    while flags.read().percent == percent_from:
        if time.monotonic() > deadline:
            raise AssertionError("no controller promoted")
        for _ in range(10):
            metrics.record("v3", 0.002, None)
        time.sleep(0.1)  # the controllers poll every 0.2 s
    entry = next(e for e in flags.history(20) if e["who"] == "controller")
    return str(entry["details"]["controller"])


def test_one_controller_acts_and_the_other_takes_over_when_it_dies(
    redis_url: str, controllers: Callable[..., Controller]
) -> None:
    client = redis.Redis.from_url(redis_url)
    flags = FlagStore(client)
    lease_key = Keys().controller_lease
    first = controllers("first")
    until(lambda: client.get(lease_key), 30, "the first controller took the lease")
    first_id = client.get(lease_key).decode()  # type: ignore[union-attr]
    assert "acting" in first.output
    second = controllers("second")
    until(lambda: "standby" in second.output, 30, "the second said it stands by")
    assert f"controller {first_id} is acting" in second.output

    flags.set_percent(1, who="test", why="first step")
    assert promoted_by(client, flags, 1) == first_id
    actors = {e["details"].get("controller") for e in flags.history(50) if e["who"] == "controller"}
    assert actors == {first_id}, "only the acting controller changed the flags"

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    killed = time.monotonic()
    until(lambda: client.get(lease_key) not in (None, first_id.encode()), LEASE_TTL + 10,
          "the second took the lease")  # fmt: skip
    took_over = time.monotonic() - killed
    second_id = client.get(lease_key).decode()  # type: ignore[union-attr]
    assert took_over < LEASE_TTL + 3, took_over
    until(lambda: "acting: controller" in second.output, 10, "the second says it acts")
    assert second_id in second.output

    flags.set_percent(1, who="test", why="again")
    assert promoted_by(client, flags, 1) == second_id
    client.close()


def test_a_clean_stop_hands_the_lease_over_at_once(
    redis_url: str, controllers: Callable[..., Controller]
) -> None:
    """With a 30 s lease, only the release on the way out explains a quick takeover."""
    client = redis.Redis.from_url(redis_url)
    lease_key = Keys().controller_lease
    first = controllers("first", lease_ttl=30)
    until(lambda: client.get(lease_key), 30, "the first controller took the lease")
    first_id = client.get(lease_key)
    second = controllers("second", lease_ttl=30)
    until(lambda: "standby" in second.output, 30, "the second said it stands by")
    stopped = time.monotonic()
    first.stop()  # SIGTERM: gives the lease up on the way out
    assert first.process.returncode == 0, first.output
    until(lambda: "acting: controller" in second.output, 10, "the second takes over")
    assert time.monotonic() - stopped < 10
    assert client.get(lease_key) not in (None, first_id)
    client.close()
