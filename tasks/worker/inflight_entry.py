"""One entry of a node's in-flight record: the hash value both writers agree on.

Two places write it: the reliable pop's ``ACCEPT`` script, as the consumer thread takes a
message (:mod:`~snakepool.tasks.worker.pop`), and the node's record
(:mod:`~snakepool.tasks.worker.recovery.inflight`) when a thread starts it, or on
receipt when the message did not come through the reliable pop. One module, so that
the two cannot drift apart, and so that the transport need not import the recovery
package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["ACCEPTED_SCORE", "InflightEntry", "entry_fields"]

#: Key of a kombu message's ``delivery_info`` under which the reliable pop leaves the
#: ``unacked_index`` score its ``ACCEPT`` wrote the entry with (for the record's
#: ``received``; absent: the message did not come through the reliable pop).
ACCEPTED_SCORE = "snakepool_inflight_score"


def entry_fields(
    task_id: str, task: str, queue: str, received: float, started: float | None = None
) -> str:
    """The JSON half of an entry (after the score), compact: ``{"task_id": …, "task": …,
    "queue": …, "received": <epoch s>, "started": <epoch s> | null}``."""
    fields = {"task_id": task_id, "task": task, "queue": queue, "received": received,
              "started": started}  # fmt: skip
    return json.dumps(fields, separators=(",", ":"))


@dataclass(frozen=True)
class InflightEntry:
    """One message a node holds: which request, and since when (its own clock).

    Attributes:
        score: kombu's ``unacked_index`` score of this delivery, as Redis wrote it.
        started: When a thread began running it (None: received, still waiting).
        removed_by_ack: Written by ``ACCEPT``: the acknowledgement's own ``MULTI``
            removes it with the message's ``unacked`` entry (``broker.QoS``), so the
            record sends no ``HDEL`` of its own. Not part of the stored value.
    """

    score: str
    task_id: str
    task: str
    queue: str
    received: float
    started: float | None = None
    removed_by_ack: bool = field(default=False, compare=False)

    def encode(self) -> str:
        """The hash value: ``"<score> <json>"`` (the score first, for the Lua scripts)."""
        json_part = entry_fields(self.task_id, self.task, self.queue, self.received, self.started)
        return f"{self.score} {json_part}"

    @classmethod
    def decode(cls, value: str | bytes) -> InflightEntry:
        """Parse a hash value written by :meth:`encode`, ``record.lua`` or ``ACCEPT``.

        Raises:
            ValueError: it is not one.
        """
        score, _, rest = (value.decode() if isinstance(value, bytes) else value).partition(" ")
        fields = json.loads(rest)
        if not isinstance(fields, dict):
            raise ValueError("not an in-flight entry")
        started = fields.get("started")
        return cls(
            score=score,
            task_id=str(fields.get("task_id", "")),
            task=str(fields.get("task", "")),
            queue=str(fields.get("queue", "")),
            received=float(fields.get("received", 0.0)),
            started=None if started is None else float(started),
        )
