"""One task id, one stored result — even when its message is delivered twice.

Delivery is at-least-once: a message whose node died, or seemed to (its heartbeat
lapsed), goes back on its queue marked *redelivered*, and the first delivery may
have finished meanwhile — or finish later. :class:`DeliveredOnce`, the base class of the
router and lane tasks, makes a redelivered message look at the result backend before it
runs and again before its result would be stored: when the task id already has a final
result (success or failure), this delivery is dropped (Celery's ``Ignore``: the message
is acknowledged, nothing is stored), so the caller's answer never changes under it.

A first delivery pays nothing: only messages marked redelivered do the lookup.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.exceptions import Ignore

from snakepool.tasks.worker.app import SnakepoolTask

__all__ = ["DeliveredOnce"]

log = logging.getLogger("snakepool.recovery")


class DeliveredOnce(SnakepoolTask):
    """A task whose redelivered message never runs, nor overwrites, a settled task id.

    A :class:`~snakepool.tasks.worker.app.SnakepoolTask`: what it raises is typed.
    """

    def _run_call(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task unless its task id is settled (before and after the run).

        The worker's tracer has pushed this request already (``Task.__call__`` would
        push a second one without the delivery info): only a direct call goes there.
        """
        if self.request.called_directly:
            return super()._run_call(*args, **kwargs)
        if self._settled():
            raise Ignore()
        try:
            result = self.run(*args, **kwargs)
        except Ignore:
            raise
        except Exception:
            if self._settled():
                raise Ignore() from None
            raise
        if self._settled():
            raise Ignore()
        return result

    def _settled(self) -> bool:
        """Whether this is a redelivery of a task id that already has a final result."""
        request = self.request
        if not (request.delivery_info or {}).get("redelivered"):
            return False
        try:
            status = self.backend.get_task_meta(request.id).get("status")
        except Exception:  # at-least-once: when in doubt, run it
            log.exception("cannot read the result of %s; running its redelivery", request.id)
            return False
        if status in states.READY_STATES:
            log.info("%s already has a result (%s): its redelivery is dropped", request.id, status)
            return True
        return False
