"""Recording a shadowed request's outcome, for the comparison of the two lanes."""

from __future__ import annotations

from snakepool.tasks.rollout.shadow import outcome_of
from snakepool.tasks.worker.pipeline.step import LaneCall, LaneStep, Outcome

__all__ = ["RecordShadow"]


class RecordShadow(LaneStep):
    """Stores this lane's outcome under the pair's request id; the second to arrive compares.

    Only for requests our dispatch code tagged (see
    :class:`~snakepool.tasks.worker.options.ShadowTag`); anything else records nothing.
    The primary's record is left for after its result is out (``call.after_result``): a
    Redis round trip, and the comparison when it arrives second, never delay the caller.
    """

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        """Record the outcome of a tagged request (the primary's once its result is out)."""
        tag = call.shadow
        if tag is None:
            return None
        node, lane, command = call.node, call.lane, str(call.command)
        seen = outcome_of(outcome.result, outcome.error)

        def record() -> None:
            diffs = node.shadows.record(tag.pair, tag.role, lane, command, seen)
            if diffs is not None:  # the second outcome: this node compared the pair
                node.observer.safely("on_shadow", lane, command, not diffs)

        if tag.role == "primary":
            call.after_result.append(("RecordShadow.after", record))
        else:
            record()
        return None
