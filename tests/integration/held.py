"""Messages held by a node that is about to "die", on a real redis-server, no processes.

A node takes a message exactly as kombu's Redis transport does with late acks (pop it,
put it in ``unacked`` and ``unacked_index``) and records it in its in-flight record as
the recovery bootstep's signal handlers would; dying is simply never beating again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery

from snakepool.config import Settings, load_settings
from snakepool.config.keys import Keys
from snakepool.tasks.worker.app import create_app
from snakepool.tasks.worker.recovery.broker import BrokerRedis
from snakepool.tasks.worker.recovery.deadletters import DeadLetterStore
from snakepool.tasks.worker.recovery.inflight import InflightRecord
from snakepool.tasks.worker.recovery.sweep import Recovery


class World:
    """One app, its broker, a survivor's recovery and helpers to hold messages."""

    def __init__(self, redis_url: str, *, threshold: int = 3, broker_url: str | None = None):
        self.settings: Settings = load_settings(
            redis_url=redis_url, broker_url=broker_url or redis_url, poison_threshold=threshold
        )
        self.app: Celery = create_app(self.settings)
        self.broker = BrokerRedis(self.app)
        self.client: redis.Redis = self.broker.client
        self.keys = Keys(self.settings.key_prefix)
        self.heartbeats = redis.Redis.from_url(redis_url)
        self.dead_letters = DeadLetterStore(self.app, self.broker, self.keys)
        self.recovery = Recovery(
            broker=self.broker, keys=self.keys, dead_letters=self.dead_letters,
            heartbeats=self.heartbeats, threshold=threshold,
        )  # fmt: skip

    def node(self, name: str = "v3-dead@host", *, ttl: float = 0.5) -> InflightRecord:
        record = InflightRecord(
            self.client, self.keys, node=name, unacked_index_key=self.broker.unacked_index_key,
            ttl=ttl, keep=60,
        )  # fmt: skip
        record.beat()
        return record

    def send(self, command: str, args: dict[str, Any] | None = None, *, queue: Any = "v3",
             task: str = "snakepool.v3.execute", task_id: str | None = None) -> str:  # fmt: skip
        result = self.app.send_task(task, args=(command, args, None), queue=queue, task_id=task_id)
        return str(result.id)

    def take(self, record: InflightRecord, queue: str = "v3", *, start: bool = True) -> str:
        """Take the next message of ``queue`` as kombu does; record it; its delivery tag."""
        raw = self.client.rpop(queue)
        assert raw is not None, f"{queue} is empty"
        message = json.loads(raw)
        info = message["properties"]["delivery_info"]
        tag = message["properties"]["delivery_tag"]
        with self.client.pipeline() as pipe:
            pipe.zadd(self.broker.unacked_index_key, {tag: time.time()})
            pipe.hset(self.broker.unacked_key, tag,
                      json.dumps([message, info["exchange"], info["routing_key"]]))  # fmt: skip
            pipe.execute()
        record.received(tag, task_id=message["headers"]["id"], task=message["headers"]["task"],
                        queue=info["routing_key"])  # fmt: skip
        if start:
            record.started(tag)
        return str(tag)

    def wait_dead(self, record: InflightRecord, timeout: float = 5.0) -> None:
        """Until the survivors see ``record``'s node as dead (time has to pass)."""
        deadline = time.monotonic() + timeout
        while record.incarnation not in self.recovery.dead():
            assert time.monotonic() < deadline, "the node never counted as dead"
            time.sleep(0.05)

    def queued(self, queue: str) -> list[dict[str, Any]]:
        """The messages of ``queue``, next to be consumed first."""
        return [json.loads(m) for m in reversed(self.client.lrange(queue, 0, -1))]

    def close(self) -> None:
        self.heartbeats.close()
        self.broker.close()
        self.app.close()


@contextmanager
def world(redis_url: str, **options: Any) -> Iterator[World]:
    made = World(redis_url, **options)
    try:
        yield made
    finally:
        made.close()
