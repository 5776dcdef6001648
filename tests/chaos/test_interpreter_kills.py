"""Interpreter kills under load (issue 9, "what must be shown"): a Pool-level soak.

N requests of mixed commands — idempotent (``ping``, ``calculate``, ``tick``) and not
(``tick_once``) — go through the V3 lane pipeline on a real node (real pool, real
Redis), while about 1 % of them see a random interpreter SIGKILLed. Nothing may be lost
(every call returns or raises), every failure must be typed, and the idempotent ones
must all succeed: the lane retries them (a crash mid-request is ``WorkerCrashed``,
retryable). A non-idempotent request under a kill fails ``WorkerCrashed``, never retried.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from snakepool.config import load_settings
from snakepool.errors import SnakepoolError
from snakepool.tasks.worker.lanes import run_lane
from snakepool.tasks.worker.node import Node
from tests.chaos.harness import ADAPTER, Report, Run, pick, publish, scale

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(pick(150, 1200)),
]

REQUESTS = pick(2000, 10_000)
POOL_SIZE = 3
#: One kill per this many requests (about 1 %).
KILL_EVERY = 100
IDEMPOTENT = ("ping", "calculate", "tick")


def make_request(run: Run, i: int) -> tuple[str, dict[str, Any]]:
    kind = i % 5
    if kind == 0:
        return "ping", {}
    if kind == 1:
        return "calculate", {"expression": f"{i} * 2 + 1"}
    if kind in (2, 3):
        return "tick", run.tick_args(0.002)
    return "tick_once", run.tick_args(0.002)


@pytest.fixture
def node(redis_url: str, registry_dir: str) -> Any:
    settings = load_settings(
        redis_url=redis_url, adapter=ADAPTER, pool_size=POOL_SIZE, registry_dir=registry_dir,
        request_timeout=10, queue_timeout=30,
        # The test kills on purpose, ~1 % of requests: no crash-loop back-off for that.
        restart_intensity=10_000, restart_period=1,
    )  # fmt: skip
    node = Node(settings, name=f"soak-{uuid.uuid4().hex[:8]}@test", lanes=("v3",))
    node.start()
    try:
        yield node
    finally:
        node.stop(grace=5)


def test_interpreter_kills_lose_nothing_and_idempotent_requests_succeed(
    node: Node, tmp_path: Path
) -> None:
    assert node.pool is not None
    pool = node.pool
    run = Run("interpreter kills", tmp_path / "starts.log")
    outcomes: dict[int, tuple[str, Any]] = {}
    kills: list[float] = []  # seconds until the pool was whole again, per kill
    done = Counter[str]()
    lock = threading.Lock()

    def one(i: int) -> None:
        command, args = make_request(run, i)
        request = SimpleNamespace(id=uuid.uuid4().hex, headers=None)
        try:
            value = run_lane(node, "v3", request, command, args, None, {})
            outcomes[i] = (command, value)
        except SnakepoolError as exc:
            outcomes[i] = (command, type(exc).__name__)
        except Exception as exc:
            outcomes[i] = (command, f"untyped {type(exc).__name__}")
        with lock:
            done["n"] += 1
            kill_now = done["n"] % KILL_EVERY == 0
        if kill_now:
            kill_random_interpreter()

    def kill_random_interpreter() -> None:
        pids = pool.interpreter_pids()
        if not pids:
            return
        victim = random.choice(pids)
        started = time.monotonic()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = started + 10
        while time.monotonic() < deadline:
            now = pool.interpreter_pids()
            if victim not in now and len(now) == POOL_SIZE:
                kills.append(time.monotonic() - started)
                return
            time.sleep(0.005)
        kills.append(float("inf"))

    with ThreadPoolExecutor(max_workers=POOL_SIZE * 2) as executor:
        futures = [executor.submit(one, i) for i in range(REQUESTS)]
        _, pending = wait(futures, timeout=pick(120, 1000))
    lost = REQUESTS - len(outcomes)
    failed = Counter(v for c, v in outcomes.values() if isinstance(v, str))
    starts = run.starts()
    retried = sum(
        1 for c, v in outcomes.values()
        if c == "tick" and isinstance(v, dict) and starts[v["id"]] > 1
    )  # fmt: skip
    report = Report(
        name="interpreter kills", scale=scale(),
        submitted=REQUESTS, accepted=REQUESTS, refused={},
        succeeded=sum(1 for _, v in outcomes.values() if not isinstance(v, str)),
        failed=dict(failed), lost=lost,
        duplicates=sum(1 for n in starts.values() if n > 1), seconds=round(run.now(), 1),
        details={
            "interpreters_killed": len(kills),
            "idempotent_retried_to_success": retried,
            "recovery_time_s_max": max(kills, default=0.0),
            "recovery_time_s_median": sorted(kills)[len(kills) // 2] if kills else 0.0,
            "pool_restarts": pool.stats()["restarts"],
        },
    )  # fmt: skip
    publish(report, __file__)
    assert not pending and lost == 0, report.text()
    assert len(kills) >= REQUESTS // KILL_EVERY - 1, report.text()
    assert max(kills) < 10, report.text()  # every killed interpreter was replaced
    assert not [f for f in failed if f.startswith("untyped")], report.text()
    # Idempotent commands always succeed: the lane retried whatever a kill interrupted.
    for command, value in outcomes.values():
        if command in IDEMPOTENT:
            assert not isinstance(value, str), (command, value)
        elif isinstance(value, str):
            assert value == "WorkerCrashed", (command, value)
    # Kills did hit requests (else the test proves nothing): some were retried.
    assert retried + failed["WorkerCrashed"] > 0, report.text()
    # The only runs of one id that started twice are the retries of ``tick`` after a
    # kill: ``tick_once`` is never run again.
    assert report.duplicates == retried, report.text()
