"""What the node-death tests share: a cluster with the chaos adapter, a watch on stored
results, and the runs each request left behind (``note`` writes one line per run)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.integration.cluster import Cluster, NodeProcess

#: The adapter every node of these tests runs (built-ins, kill_node, note).
ADAPTER = "tests.adapters.node_chaos"
#: What Celery's Redis backend names (and publishes) a task's result as.
RESULT_PREFIX = "celery-task-meta-"
READY = ("SUCCESS", "FAILURE", "REVOKED")


@contextmanager
def chaos_cluster(
    redis_url: str, workdir: Path, *nodes: tuple[str, str], pool_size: int = 2
) -> Iterator[tuple[Cluster, list[NodeProcess]]]:
    """Start ``nodes`` (lane, name) together; stop them after, failing on leftovers."""
    cluster = Cluster(
        redis_url, workdir, adapter=ADAPTER, pool_size=pool_size,
        env={"SNAKEPOOL_ENABLE_CHAOS": "1"},
    )  # fmt: skip
    started: list[NodeProcess] = []
    try:
        started = [cluster.start(lane, name, wait=False) for lane, name in nodes]
        for node in started:
            cluster.wait_ready(node)
        yield cluster, started
    finally:
        leftovers = cluster.stop()
        assert leftovers == [], f"processes left behind: {leftovers}"


class ResultWatch:
    """Every result Celery's Redis backend stores, as it is stored (it publishes each on
    the result's key): how many final results each task id got, and when."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{RESULT_PREFIX}*")
        self.final: Counter[str] = Counter()
        self.first_final: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        import json

        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "pmessage":
                continue
            task_id = message["channel"].decode().removeprefix(RESULT_PREFIX)
            status = json.loads(message["data"]).get("status")
            if status in READY:
                with self._lock:
                    self.final[task_id] += 1
                    self.first_final.setdefault(task_id, time.monotonic())

    def counts(self) -> Counter[str]:
        """Task id → final results stored for it so far."""
        with self._lock:
            return Counter(self.final)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


def runs(notes: Path) -> dict[str, list[int]]:
    """Key → the pid of the node of each run of ``note`` under that key, in order."""
    found: dict[str, list[int]] = defaultdict(list)
    for path in notes.iterdir():
        found[path.name] = [int(line) for line in path.read_text().split()]
    return dict(found)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` (another process's state: there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
