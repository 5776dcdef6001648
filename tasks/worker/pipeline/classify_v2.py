"""V2's error classification: errors raised on the V2-compat lane carry the fields V2
callers branch on — ``v2_category``, ``severity``, ``retry_strategy``."""

from __future__ import annotations

from snakepool import errors
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["ClassifyV2", "classify_v2"]

# V2's classification: error type → (category, severity, retry strategy).
_V2_CLASSES: dict[str, tuple[str, str, str]] = {
    "QueueFull": ("resource_exhausted", "warning", "retry_with_backoff"),
    "QueueTimeout": ("resource_exhausted", "warning", "retry_with_backoff"),
    "PoolUnavailable": ("service_unavailable", "critical", "retry_with_backoff"),
    "WorkerCrashed": ("worker_failure", "error", "retry_immediately"),
    "RequestTimeout": ("timeout", "error", "retry_if_idempotent"),
    "CommandFailed": ("execution_error", "error", "do_not_retry"),
    "UnknownCommand": ("validation_error", "info", "do_not_retry"),
    "InvalidArguments": ("validation_error", "info", "do_not_retry"),
    "PayloadTooLarge": ("validation_error", "info", "do_not_retry"),
    "SessionNotFound": ("not_found", "info", "do_not_retry"),
    "ProgramNotFound": ("not_found", "info", "do_not_retry"),
    "ConfigError": ("configuration_error", "critical", "do_not_retry"),
    # Its runs killed their nodes: never retried, and loud.
    "DeadLettered": ("execution_error", "critical", "do_not_retry"),
}


def classify_v2(error: errors.SnakepoolError) -> errors.SnakepoolError:
    """Add V2's classification fields to ``error`` (in place; returned for chaining)."""
    category, severity, strategy = _V2_CLASSES.get(
        type(error).__name__, ("internal_error", "error", "do_not_retry")
    )
    error.data.update(v2_category=category, severity=severity, retry_strategy=strategy)
    return error


class ClassifyV2(LaneStep):
    """Classifies V2-compat errors the V2 way (other lanes' errors stay as they are)."""

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Annotate the error of a failed V2-compat request."""
        if call.lane == "v2compat" and isinstance(outcome.error, errors.SnakepoolError):
            classify_v2(outcome.error)
        return None
