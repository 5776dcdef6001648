"""Recording a shadowed request's outcome, for the comparison of the two lanes."""

from __future__ import annotations

from snakepool.tasks.rollout.shadow import outcome_of
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["RecordShadow"]


class RecordShadow(LaneStep):
    """Stores this lane's outcome under the pair's request id; the second to arrive compares.

    Only for requests our dispatch code tagged (see
    :class:`~snakepool.tasks.worker.options.ShadowTag`); anything else records nothing.
    """

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Record the outcome of a tagged request."""
        tag = call.shadow
        if tag is not None:
            diffs = call.node.shadows.record(
                tag.pair, tag.role, call.lane, str(call.command),
                outcome_of(outcome.result, outcome.error),
            )  # fmt: skip
            if diffs is not None:  # the second outcome: this node compared the pair
                call.node.observer.safely("on_shadow", call.lane, str(call.command), not diffs)
        return None
