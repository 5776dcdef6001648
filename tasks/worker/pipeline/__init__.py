"""The lane pipeline: validation, retries, metrics, shadow and V2 classification as steps
around running a request (see :mod:`~snakepool.tasks.worker.pipeline.runner`)."""

from snakepool.tasks.worker.pipeline.classify_v2 import ClassifyV2, classify_v2
from snakepool.tasks.worker.pipeline.observe import Observe
from snakepool.tasks.worker.pipeline.record_metrics import RecordMetrics
from snakepool.tasks.worker.pipeline.record_shadow import RecordShadow
from snakepool.tasks.worker.pipeline.retries import Retries, retry_delay, should_retry
from snakepool.tasks.worker.pipeline.runner import Pipeline
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome
from snakepool.tasks.worker.pipeline.validate import Validate

__all__ = [
    "ClassifyV2",
    "LaneCall",
    "LaneStep",
    "Observe",
    "Outcome",
    "Pipeline",
    "RecordMetrics",
    "RecordShadow",
    "Retries",
    "Validate",
    "classify_v2",
    "lane_steps",
    "retry_delay",
    "should_retry",
]


def lane_steps() -> tuple[LaneStep, ...]:
    """The lanes' steps, outermost first: validate → run → retries → metrics (Redis, then
    the node's observer) → shadow → V2."""
    return (Validate(), ClassifyV2(), RecordShadow(), Observe(), RecordMetrics(), Retries())
