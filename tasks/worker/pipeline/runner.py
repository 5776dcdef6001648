"""The lane pipeline: the steps around running one request, in the style of dramatiq's
middleware.

::

    steps = (Validate, ClassifyV2, RecordShadow, Observe, RecordMetrics, Retries)

    before:  Validate ─► ClassifyV2 ─► RecordShadow ─► Observe ─► RecordMetrics ─► Retries ─┐
                                                                                           run
    after:   Validate ◄─ ClassifyV2 ◄─ RecordShadow ◄─ Observe ◄─ RecordMetrics ◄─ Retries ◄┘
                         (V2 fields)   (pair record)   (observer) (lane figures)   (run again?)

so a request flows validate → run → retries → metrics → shadow → V2 classification.

The rule the runner enforces: **a step's failure never changes the request's outcome**.
Whatever a hook raises is logged (with the step and hook named) and treated as "no
opinion"; only the documented return values of :class:`LaneStep` hooks act — a
refusal from ``before``, a back-off from ``after``. The one exception is a guard
(:attr:`LaneStep.guard`, the validation): "no opinion" there would run a request nobody
checked, so a guard that fails refuses the request (a server error naming the step).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from snakepool.errors import SnakepoolError
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["MAX_RUNS", "Pipeline"]

log = logging.getLogger("snakepool.lanes")

#: Most runs of one request's command, whatever the steps ask (a guard against a step
#: that keeps asking; Retries itself stops well before).
MAX_RUNS = 10
#: Longest back-off a step may ask for, in seconds.
MAX_BACKOFF_SECONDS = 30.0

Run = Callable[[LaneCall], Any]


class Pipeline:
    """Runs requests through ``steps`` (see the module docstring for the order).

    Args:
        steps: The steps, outermost first.
    """

    def __init__(self, steps: Sequence[LaneStep]) -> None:
        self.steps = tuple(steps)

    def run(self, call: LaneCall, command: Run) -> Outcome:
        """Take ``call`` through the steps around ``command`` and return its outcome.

        Never raises an :class:`Exception`: the command's exception is the outcome's
        ``error``. A ``BaseException`` that is not an ``Exception`` (shutdown) propagates.
        """
        refusal = self._before(call)
        if refusal is not None:
            outcome = Outcome(error=refusal, refused=True)
        else:
            outcome = self._attempt(call, command)
        position = 0
        reversed_steps = self.steps[::-1]
        while position < len(reversed_steps):
            step = reversed_steps[position]
            delay = self._hook(step, "after", call, outcome)
            position += 1
            if delay is None or outcome.refused:
                continue
            if not _is_backoff(delay) or call.attempt + 1 >= MAX_RUNS:
                log.error("lane step %s asked for a run it may not have", type(step).__name__)
                continue
            time.sleep(delay)
            call.attempt += 1
            outcome = self._attempt(call, command)
            position = 0  # every step's after sees the new outcome
        return outcome

    def _before(self, call: LaneCall) -> SnakepoolError | None:
        for step in self.steps:
            refusal: object  # what the hook returned: only an error refuses
            if step.guard:
                try:
                    refusal = step.before(call)
                except Exception as exc:
                    name = type(step).__name__
                    log.exception("lane step %s.before failed; the request is refused", name)
                    call.node.observer.safely("on_step_failure", call.lane, name)
                    return SnakepoolError(
                        f"lane step {name} failed ({type(exc).__name__}); the request was not run",
                        step=name,
                    )
            else:
                refusal = self._hook(step, "before", call)
            if refusal is None:
                continue
            if isinstance(refusal, SnakepoolError):
                return refusal
            log.error("lane step %s refused with %r, not an error", type(step).__name__, refusal)
        return None

    @staticmethod
    def run_after_result(call: LaneCall) -> None:
        """Run the observation the steps left for after the result (``call.after_result``).

        Never raises an :class:`Exception`: a failure is logged with the step named, as
        a hook's would be.
        """
        work, call.after_result = call.after_result, []
        for name, job in work:
            try:
                job()
            except Exception:
                log.exception("lane step %s failed; the request's outcome stands", name)
                step = name.split(".")[0]
                call.node.observer.safely("on_step_failure", call.lane, step)

    @staticmethod
    def _attempt(call: LaneCall, command: Run) -> Outcome:
        try:
            return Outcome(result=command(call))
        except Exception as exc:  # every exception is an outcome (and counted as one)
            return Outcome(error=exc)

    @staticmethod
    def _hook(step: LaneStep, hook: str, call: LaneCall, *args: Any) -> Any:
        name = type(step).__name__
        try:
            return getattr(step, hook)(call, *args)
        except Exception:
            log.exception("lane step %s.%s failed; the request's outcome stands", name, hook)
            call.node.observer.safely("on_step_failure", call.lane, name)
            return None


def _is_backoff(delay: object) -> bool:
    return (
        isinstance(delay, int | float)
        and not isinstance(delay, bool)
        and math.isfinite(delay)
        and 0 <= delay <= MAX_BACKOFF_SECONDS
    )
