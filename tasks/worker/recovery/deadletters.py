"""The dead-letter list: poison requests, set aside with their history.

A request whose deliveries ended with their node's death ``POISON_THRESHOLD`` times is
moved here by the survivor that settles the last of those deaths (``settle.lua``), and
its caller is sent :class:`~snakepool.errors.DeadLettered` (:meth:`DeadLetterStore.report`).
Keys (in the broker's Redis, next to kombu's ``unacked``; ``docs/redis-keys.md``)::

    deadletter:<task id>    hash: message (kombu's unacked entry), meta, deliveries, at
    deadletters             sorted set: task id → when its record expires
    deadletters:unreported  set: task ids whose caller has not been sent the error yet

Bounded: each record expires after ``DEAD_LETTER_TTL``; at most ``MAX_DEAD_LETTERS``
are kept (the oldest dropped first). ``snakepool deadletter list|show|retry|purge`` is
the operator's side (:mod:`snakepool.tasks.cli.deadletter`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery, states
from celery.app.task import Context

from snakepool.config.keys import Keys
from snakepool.errors import DeadLettered
from snakepool.tasks.worker.pipeline.classify_v2 import classify_v2
from snakepool.tasks.worker.recovery.broker import BrokerRedis, Delivery, text
from snakepool.tasks.worker.recovery.scripts import lua

__all__ = ["DeadLetter", "DeadLetterStore"]

log = logging.getLogger("snakepool.recovery")


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as stored.

    Attributes:
        meta: ``task_id``, ``task``, ``command``, ``queue`` (where a retry sends it),
            ``lane``, ``threshold``.
        deliveries: One dict per delivery that ended with its node's death, oldest
            first: ``node``, ``received``, ``started``, ``noticed`` (Unix times).
        at: When it was dead-lettered (Redis server clock, Unix seconds).
    """

    task_id: str
    delivery: Delivery
    meta: dict[str, Any]
    deliveries: list[dict[str, Any]]
    at: int

    @property
    def nodes(self) -> list[str]:
        """The nodes that died running it, oldest first."""
        return [str(d.get("node")) for d in self.deliveries]

    def summary(self) -> dict[str, Any]:
        """What ``deadletter list`` shows of it."""
        return {
            "task_id": self.task_id,
            "command": self.meta.get("command"),
            "queue": self.meta.get("queue"),
            "deliveries": len(self.deliveries),
            "nodes": self.nodes,
            "at": self.at,
        }

    def describe(self) -> dict[str, Any]:
        """What ``deadletter show`` prints: the summary, the history and the request."""
        args, kwargs = self.delivery.call()
        return {
            **self.summary(),
            "task": self.meta.get("task"),
            "threshold": self.meta.get("threshold"),
            "history": self.deliveries,
            "args": args,
            "kwargs": kwargs,
            "message": self.delivery.message,
        }

    def error(self) -> DeadLettered:
        """The error its caller gets."""
        count = len(self.deliveries)
        error = DeadLettered(
            f"request {self.task_id} ({self.meta.get('command')!s:.80}) was dead-lettered: "
            f"{count} deliveries each ended with the death of the node running it "
            f"({', '.join(self.nodes)}); see `snakepool deadletter show {self.task_id}`",
            task_id=self.task_id,
            deliveries=count,
            nodes=self.nodes,
            threshold=self.meta.get("threshold"),
        )
        if self.meta.get("lane") == "v2compat":
            classify_v2(error)
        return error


class DeadLetterStore:
    """Reads and manages the dead-letter list; sends callers their ``DeadLettered``.

    Args:
        app: The Celery app (its result backend receives ``DeadLettered``).
        broker: The broker's Redis (where dead letters live).
        keys: Key builder.
    """

    def __init__(self, app: Celery, broker: BrokerRedis, keys: Keys) -> None:
        self.app = app
        self.broker = broker
        self.keys = keys
        self.client = broker.client
        self._retry = self.client.register_script(lua("retry"))

    def get(self, task_id: str) -> DeadLetter | None:
        """The dead letter of ``task_id``, or None.

        Raises:
            InvalidArguments: ``task_id`` is not a valid request id.
        """
        fields = self.client.hgetall(self.keys.dead_letter(task_id))
        if not fields:
            return None
        try:
            return DeadLetter(
                task_id=task_id,
                delivery=Delivery.decode(fields[b"message"]),
                meta=json.loads(fields[b"meta"]),
                deliveries=json.loads(fields[b"deliveries"]),
                at=int(fields[b"at"]),
            )
        except (KeyError, ValueError, TypeError):
            log.exception("dead letter %s cannot be read", task_id)
            return None

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first (at most ``limit``)."""
        index = self.keys.dead_letter_index
        ids = [text(i) for i in self.client.zrevrange(index, 0, max(limit, 1) - 1)]
        found = [self.get(task_id) for task_id in ids]
        return [letter for letter in found if letter is not None]

    def report(self) -> int:
        """Send ``DeadLettered`` to the caller of every unreported dead letter; how many.

        Runs on every survivor's sweep, so a survivor dying between dead-lettering a
        request and storing its result only delays the caller's answer by a second.
        """
        reported = 0
        for raw in self.client.smembers(self.keys.dead_letter_unreported):
            task_id = text(raw)
            letter = self.get(task_id)
            if letter is not None and not letter.delivery.headers.get("ignore_result"):
                self._store_failure(letter)
                reported += 1
            self.client.srem(self.keys.dead_letter_unreported, task_id)
        return reported

    def retry(self, task_id: str) -> bool:
        """Publish the dead letter again under its task id, with a fresh death count.

        Its ``DeadLettered`` result is forgotten first, so the new run's result is the
        one the task id ends with. Returns False when there is no such dead letter.

        Raises:
            InvalidArguments: ``task_id`` is not a valid request id.
        """
        letter = self.get(task_id)
        if letter is None:
            return False
        message = letter.delivery.marked(redelivered=False)
        queue = str(letter.meta.get("queue") or letter.delivery.routing_key)
        lists = [self.broker.list_for(queue, message)]
        self.app.backend.forget(task_id)
        keys = self.keys
        done = self._retry(
            keys=[keys.dead_letter(task_id), keys.dead_letter_index,
                  keys.dead_letter_unreported, keys.deaths(task_id), *lists],
            args=[task_id, json.dumps(message)],
        )  # fmt: skip
        if not done:  # purged meanwhile: the caller keeps its answer
            self._store_failure(letter)
        return bool(done)

    def purge(self) -> int:
        """Delete every dead letter (their callers already have ``DeadLettered``)."""
        index = self.keys.dead_letter_index
        ids = [text(i) for i in self.client.zrange(index, 0, -1)]
        with self.client.pipeline() as pipe:
            for task_id in ids:
                pipe.delete(self.keys.dead_letter(task_id))
            pipe.delete(index, self.keys.dead_letter_unreported)
            pipe.execute()
        return len(ids)

    def _store_failure(self, letter: DeadLetter) -> None:
        args, kwargs = letter.delivery.call()
        request = Context(
            task=letter.meta.get("task"), args=args, kwargs=kwargs, hostname=None,
            delivery_info={"routing_key": letter.meta.get("lane") or letter.meta.get("queue")},
            chord=None, errbacks=None, chain=None,
        )  # fmt: skip
        self.app.backend.store_result(
            letter.task_id, letter.error(), states.FAILURE, request=request
        )
