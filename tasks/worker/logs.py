"""What a worker node logs per task: nothing below DEBUG.

Celery writes two INFO lines for every task ("Task … received", "Task … succeeded in …"),
which a node started with ``--loglevel INFO`` (``snakepool worker``'s default) formats
and writes for every request: a measurable share of a lane task's CPU, on a node whose
single GIL bounds its throughput. A plain Celery worker (default WARNING) pays nothing.
Those lines now appear only when the node runs at DEBUG; the node's own lines (start,
stop, warnings) and every failure Celery logs (ERROR) are unchanged.
"""

from __future__ import annotations

import logging

__all__ = ["PER_TASK_LOGGERS", "per_task_lines_at_debug"]

#: Celery's loggers that write one INFO line per task received / finished.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def per_task_lines_at_debug(loglevel: str | int) -> None:
    """Raise Celery's per-task loggers to WARNING unless ``loglevel`` is DEBUG (or lower).

    Call before the worker starts: Celery decides once, when it builds a task's tracer
    and strategy, whether it formats those lines at all.

    Args:
        loglevel: The node's log level (a name such as ``"INFO"``, or a number).
    """
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(loglevel.upper())
    if isinstance(level, int) and level <= logging.DEBUG:
        return
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
