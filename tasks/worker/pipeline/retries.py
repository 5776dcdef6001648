"""Retries: run a command again, with back-off, when that is safe.

Only when both hold: the error is ``retryable`` (the interpreter crashed, the pool was
saturated or unavailable) and the command is ``idempotent`` — running it twice must be
harmless. Retries happen inside the lane task, so the caller sees one request.
"""

from __future__ import annotations

import logging

from snakepool import errors
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["MAX_RETRIES", "RETRY_BASE_SECONDS", "Retries", "retry_delay", "should_retry"]

log = logging.getLogger("snakepool.lanes")

#: Attempts after the first, for idempotent commands with retryable errors.
MAX_RETRIES = 3
#: First retry delay in seconds (doubled each time, capped at 5 s).
RETRY_BASE_SECONDS = 0.1


def should_retry(error: BaseException, *, idempotent: bool, attempt: int) -> bool:
    """Whether attempt number ``attempt`` (0 = the first) may be retried."""
    return (
        idempotent
        and attempt < MAX_RETRIES
        and isinstance(error, errors.SnakepoolError)
        and error.retryable
    )


def retry_delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1``."""
    return float(min(5.0, RETRY_BASE_SECONDS * 2**attempt))


class Retries(LaneStep):
    """Asks for another run of a retryable failure of an idempotent command."""

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """The back-off before the next run, or None."""
        error = outcome.error
        if not isinstance(error, errors.SnakepoolError) or not error.retryable:
            return None
        pool = call.node.pool
        flags = pool.commands().get(call.command, {}) if pool is not None else {}
        if not should_retry(error, idempotent=bool(flags.get("idempotent")), attempt=call.attempt):
            return None
        log.warning("retrying idempotent %r after %s", call.command, type(error).__name__)
        return retry_delay(call.attempt)
