"""Nothing lost when a node dies; poison requests dead-lettered (DESIGN.md §8).

- :mod:`~snakepool.tasks.worker.recovery.broker` — kombu's ``unacked`` messages and
  queue bindings in the broker's Redis;
- :mod:`~snakepool.tasks.worker.recovery.inflight` — each node's record of the messages
  it has received and not finished, with its in-flight heartbeat;
- :mod:`~snakepool.tasks.worker.recovery.sweep` — survivors return a dead node's
  messages to their queues (a dead node's direct queue to its lane) and dead-letter a
  request after ``POISON_THRESHOLD`` deliveries that each ended with its node's death;
- :mod:`~snakepool.tasks.worker.recovery.bindings` — a node's entries in kombu's binding
  tables go with it: its own at a clean stop, a dead node's removed by a survivor;
- :mod:`~snakepool.tasks.worker.recovery.deadletters` — the dead-letter list and the
  ``DeadLettered`` answer to the caller;
- :mod:`~snakepool.tasks.worker.recovery.once` — a redelivered message never runs again
  (nor overwrites) once its task id has a final result;
- :mod:`~snakepool.tasks.worker.recovery.step` — the bootstep running it all on a node.
"""

from __future__ import annotations

from snakepool.tasks.worker.recovery.bindings import GoneNodeBindings, release_own_bindings
from snakepool.tasks.worker.recovery.broker import BrokerRedis, Delivery
from snakepool.tasks.worker.recovery.deadletters import DeadLetter, DeadLetterStore
from snakepool.tasks.worker.recovery.inflight import InflightEntry, InflightRecord
from snakepool.tasks.worker.recovery.once import DeliveredOnce
from snakepool.tasks.worker.recovery.step import RecoveryService, RecoveryStep
from snakepool.tasks.worker.recovery.sweep import Recovery, RecoveryReport, SweepReport

__all__ = [
    "BrokerRedis",
    "DeadLetter",
    "DeadLetterStore",
    "DeliveredOnce",
    "Delivery",
    "GoneNodeBindings",
    "InflightEntry",
    "InflightRecord",
    "Recovery",
    "RecoveryReport",
    "RecoveryService",
    "RecoveryStep",
    "SweepReport",
    "release_own_bindings",
]
