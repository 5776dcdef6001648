"""Safe rollout: where a request goes, and how the move to V3 is watched and steered.

- :mod:`~snakepool.tasks.rollout.routing` — :func:`decide`, the pure routing decision
  (sticky Unleash bucket, kill switch, overrides, command allow-list);
- :mod:`~snakepool.tasks.rollout.metrics` — :class:`LaneMetrics`, the per-lane figures
  the lanes write and everything below reads, and
  :mod:`~snakepool.tasks.rollout.metrics_batch` — :class:`BatchedLaneMetrics`, how a
  worker node writes them (batched while requests run concurrently);
- :mod:`~snakepool.tasks.rollout.breaker` — :class:`CircuitBreaker`, shedding a failing
  lane's traffic to the other lane;
- :mod:`~snakepool.tasks.rollout.liveness` — :class:`LaneLiveness`, whether a lane has a
  live node (a lane with none sheds its traffic like an open breaker);
- :mod:`~snakepool.tasks.rollout.shadow` and :mod:`~snakepool.tasks.rollout.comparator` —
  pairing the two lanes' outcomes of a shadowed request and comparing them;
- :mod:`~snakepool.tasks.rollout.controller` — :class:`RolloutController`: promote, hold
  or roll back.

The flags themselves (percent, kill switch, audit trail) live in
:mod:`snakepool.config.flags`. Nothing here knows Celery.
"""

from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.comparator import Comparator
from snakepool.tasks.rollout.controller import ControllerPolicy, Decision, RolloutController
from snakepool.tasks.rollout.liveness import LaneLiveness
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.metrics_batch import BatchedLaneMetrics
from snakepool.tasks.rollout.routing import bucket, decide
from snakepool.tasks.rollout.shadow import (
    CommandCatalog,
    ShadowRecorder,
    is_pair_id,
    outcome_of,
    should_shadow,
)

__all__ = [
    "BatchedLaneMetrics",
    "BreakerPolicy",
    "CircuitBreaker",
    "CommandCatalog",
    "Comparator",
    "ControllerPolicy",
    "Decision",
    "LaneLiveness",
    "LaneMetrics",
    "RolloutController",
    "ShadowRecorder",
    "bucket",
    "decide",
    "is_pair_id",
    "outcome_of",
    "should_shadow",
]
