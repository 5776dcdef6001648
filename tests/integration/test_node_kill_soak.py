"""Node kills under steady load (issue 9, "What must be shown: node kills").

Router + 3 V3 + 2 V2-compat nodes, rollout 50 %, requests through the router and
zero-hop alike (half of them in V2 sessions, bound to a node); one node SIGKILLed every
``interval`` seconds (a replacement started, as compose's ``restart`` would). Reports
submitted, succeeded, failed by type, lost (never resolved: must be 0), duplicates run
and, per kill, the time until the last of the dead node's interrupted requests had run
elsewhere (target ≤ 30 s).

``SNAKEPOOL_CHAOS_SCALE=full`` (``make chaos``): three kills 20 s apart. By default a
short version (one V2-compat node killed after a few seconds) so ``make test`` guards it.
``SNAKEPOOL_CHAOS_REPORT=path`` also writes the report there as JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

from snakepool.tasks.client import Client
from tests.integration.cluster import Cluster, NodeProcess
from tests.integration.node_chaos import ResultWatch, chaos_cluster, runs

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]


@dataclass(frozen=True)
class Scale:
    victims: tuple[str, ...]  # node names, killed in this order
    interval: float  # seconds of load before each kill
    rate: float  # requests per second
    tail: float  # seconds of load after the last kill


SCALES = {
    "short": Scale(victims=("v2-a",), interval=4.0, rate=8.0, tail=6.0),
    "full": Scale(victims=("v3-a", "v2-a", "v3-b"), interval=20.0, rate=15.0, tail=20.0),
}
NODES = (("router", "router-1"), ("v3", "v3-a"), ("v3", "v3-b"), ("v3", "v3-c"),
         ("v2compat", "v2-a"), ("v2compat", "v2-b"))  # fmt: skip
SESSIONS = 20


class Load:
    """Submits ``note`` requests at a steady rate from a thread, router and zero-hop."""

    def __init__(self, clients: list[Client], sessions: list[str], notes: Path, rate: float):
        self.clients, self.sessions, self.notes, self.rate = clients, sessions, notes, rate
        self.sent: list[tuple[str, AsyncResult, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.wait(1 / self.rate):
                return
            key = f"r{n}"
            client = self.clients[n % len(self.clients)]
            session = self.sessions[n % len(self.sessions)] if n % 2 else None
            args = {"dir": str(self.notes), "key": key, "seconds": 0.1 + (n % 5) / 10}
            self.sent.append((key, client.submit("note", args, session_id=session),
                              time.monotonic()))  # fmt: skip

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _kill(cluster: Cluster, started: list[NodeProcess], name: str) -> tuple[int, float]:
    victim = next(n for n in started if n.name == name and n.process.poll() is None)
    pid = victim.process.pid
    cluster.kill(victim)
    killed = time.monotonic()
    cluster.start(victim.lane, f"{name}-r{pid}", wait=False)  # compose's restart
    return pid, killed


@pytest.mark.timeout(600)
def test_node_kills_under_load_lose_nothing(redis_url: str, tmp_path: Path) -> None:
    scale = SCALES[os.environ.get("SNAKEPOOL_CHAOS_SCALE", "short")]
    notes = tmp_path / "notes"
    notes.mkdir()
    clients = [Client(redis_url=redis_url), Client(redis_url=redis_url, routing="direct")]
    watch = ResultWatch(redis_url)
    try:
        with chaos_cluster(redis_url, tmp_path, *NODES) as (cluster, started):
            router = clients[0]
            router.wait_for_flags(router.set_rollout(50, "soak")["version"])
            sessions = [router.create_session() for _ in range(SESSIONS)]
            kills: list[tuple[str, int, float]] = []
            with Load(clients, sessions, notes, scale.rate) as load:
                for name in scale.victims:
                    time.sleep(scale.interval)
                    kills.append((name, *_kill(cluster, started, name)))
                time.sleep(scale.tail)
            report = _settle(load, watch, notes, kills)
    finally:
        watch.close()
        for client in clients:
            client.close()
    print("\nnode kills:", json.dumps(report, indent=2))
    if path := os.environ.get("SNAKEPOOL_CHAOS_REPORT"):
        Path(path).write_text(json.dumps(report, indent=2))
    assert report["lost"] == 0
    assert report["failed"] == {}
    assert report["submitted"] == report["succeeded"] > 0
    assert all(k["recovery_s"] <= 30 for k in report["kills"]), report["kills"]
    assert report["results_per_task_id"] == [1]


def _settle(
    load: Load, watch: ResultWatch, notes: Path, kills: list[tuple[str, int, float]]
) -> dict[str, Any]:
    """Wait for every request (60 s at most), then measure."""
    outcomes: dict[str, Any] = {}
    failed: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    for key, result, _sent in load.sent:
        try:
            outcomes[key] = result.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # a typed error is an outcome; a timeout is a loss
            if type(exc).__name__ == "TimeoutError":
                continue
            outcomes[key] = exc
            failed[type(exc).__name__] += 1
    ran = runs(notes)
    counts = watch.counts()
    per_kill = []
    for name, pid, killed in kills:
        interrupted = [key for key, pids in ran.items() if pid in pids[:-1]]
        ids = {key: result.id for key, result, _ in load.sent}
        done = [watch.first_final.get(ids[key], killed) - killed for key in interrupted]
        # Requests sent to the dead node in its last seconds (V2 sessions bound to it,
        # before its heartbeat expired) never ran there: the slowest answer after the
        # kill bounds them too.
        around = [(result, sent) for _k, result, sent in load.sent if -1 <= sent - killed <= 5]
        after = [watch.first_final.get(result.id, sent) - sent for result, sent in around]
        per_kill.append({
            "node": name, "interrupted": len(interrupted),
            "recovery_s": round(max(done + after, default=0.0), 2),
            "dead_node_backlog": sum(1 for a in after if a > 2),
        })  # fmt: skip
    return {
        "submitted": len(load.sent),
        "succeeded": sum(1 for o in outcomes.values() if not isinstance(o, Exception)),
        "failed": dict(failed),
        "lost": len(load.sent) - len(outcomes),
        "duplicates_run": sum(len(pids) - 1 for pids in ran.values()),
        "results_per_task_id": sorted({counts[result.id] for _k, result, _s in load.sent}),
        "kills": per_kill,
    }
