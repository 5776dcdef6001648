"""How a worker node logs: client errors in one line, and a quiet mode for ``snakepool up``.

- A client error (``InvalidArguments``, ``UnknownCommand``, ``SessionNotFound``, …: the
  request's own fault) is an expected outcome, not a node failure. The tasks list these
  types in ``Task.throws``, so Celery logs each as one INFO line ("raised expected")
  instead of an ERROR with a traceback ("raised unexpected"); every other error keeps
  its traceback.
- ``snakepool worker --quiet`` (what ``up`` runs unless ``--verbose``) drops Celery's
  per-task INFO lines (received, succeeded, ignored by the router's hand-over), its
  start-up banner and broker-connection line, and turns its multi-line warning about
  running as root into one line: what is left is one line per node event (serving,
  ready), client errors, warnings and errors.
- Celery's two INFO lines for every task ("received", "succeeded in …") are formatted
  and written for every request at ``--loglevel INFO``: a measurable share of a lane
  task's CPU on a node whose one GIL bounds its throughput (a plain Celery worker, at
  WARNING by default, pays nothing). Celery decides once, when the consumer builds each
  task's tracer and strategy, whether to produce them: :func:`per_task_lines_at_debug`
  has them built without, then gives failures (client errors' one line included) their
  usual level back. At DEBUG everything stays.
"""

from __future__ import annotations

import logging

from snakepool import errors

__all__ = [
    "CLIENT_ERRORS",
    "PER_TASK_LOGGERS",
    "RETRY_LOG_EVERY",
    "QuietTaskLog",
    "RetryLines",
    "StartFailureLine",
    "client_error_types",
    "label_log_lines",
    "one_line_retries",
    "one_line_start_failures",
    "per_task_lines_at_debug",
    "quiet_task_logs",
]

#: Loggers Celery writes its routine INFO lines to.
_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.worker.consumer.connection")
#: Celery's "Connected to <broker>" line at every (re)connection.
_CONNECTED = "Connected to %s"

log = logging.getLogger("snakepool.node")


def client_error_types() -> tuple[type[errors.SnakepoolError], ...]:
    """Every error class of the tree whose ``category`` is ``client`` (subclasses too)."""
    found: list[type[errors.SnakepoolError]] = []
    pending: list[type[errors.SnakepoolError]] = [errors.SnakepoolError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.category == "client" and cls not in found:
            found.append(cls)
    return tuple(sorted(found, key=lambda c: c.__name__))


#: ``Task.throws`` of the router and lane tasks.
CLIENT_ERRORS = client_error_types()


class QuietTaskLog(logging.Filter):
    """Drops Celery's per-task INFO lines; keeps failures, warnings and everything else."""

    def __init__(self) -> None:
        super().__init__()
        from celery.app import trace

        self._routine = {trace.LOG_RECEIVED, trace.LOG_SUCCESS, trace.LOG_IGNORED, _CONNECTED}

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a routine per-task INFO record."""
        return not (record.levelno <= logging.INFO and record.msg in self._routine)


def quiet_task_logs(node: str = "this node") -> None:
    """Install :class:`QuietTaskLog` on Celery's routine loggers (this process), and say
    in one line what Celery's warning about running as root says in seven.

    Args:
        node: The node's name, for that line (logging is not set up yet: it goes to
            stderr as it is).
    """
    import os
    import warnings

    from celery.exceptions import SecurityWarning

    for name in _TASK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietTaskLog) for f in logger.filters):
            logger.addFilter(QuietTaskLog())
    warnings.filterwarnings("ignore", category=SecurityWarning)
    if os.geteuid() == 0:
        log.warning("%s runs as root: Celery advises a dedicated user", node)


class StartFailureLine(logging.Filter):
    """A node that cannot start (its adapter does not load, its metrics port is taken…)
    fails with a typed snakepool error whose message says why; Celery logs it as
    ``Unrecoverable error: <repr>`` with our own traceback (20 lines, the adapter's
    remote traceback folded into the repr). This makes it one line: ``this node cannot
    start: ConfigError: adapter 'x' failed to load: ModuleNotFoundError: …``. Other
    errors keep their traceback (a bug should show where it is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always True; rewrites the record of a typed start failure."""
        error = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.CRITICAL and isinstance(error, errors.SnakepoolError):
            record.msg = "this node cannot start: %s: %s (--loglevel DEBUG: with the traceback)"
            record.args = (type(error).__name__, error.message)
            record.exc_info, record.exc_text = None, None
        return True


def one_line_start_failures() -> None:
    """Install :class:`StartFailureLine` on Celery's worker logger (this process)."""
    logger = logging.getLogger("celery.worker")
    if not any(isinstance(f, StartFailureLine) for f in logger.filters):
        logger.addFilter(StartFailureLine())


#: Seconds between two of Celery's "Failed operation … Retrying" lines let through.
RETRY_LOG_EVERY = 10.0


class RetryLines(logging.Filter):
    """Celery's result backend logs every retry of a store (Redis away, or at
    ``maxmemory``) as a WARNING with a full traceback: ~60 lines, about twice a second for
    each result waiting, for as long as ten minutes (``RESULT_STORE_RETRIES``). Here one
    line per :data:`RETRY_LOG_EVERY` seconds gets through, with the error's text and how
    many were left out; the retries themselves go on."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a retry line within :data:`RETRY_LOG_EVERY` of the last one."""
        if not str(record.msg).startswith("Failed operation"):
            return True
        if record.created < self._next:
            self._left_out += 1
            return False
        self._next = record.created + RETRY_LOG_EVERY
        error = record.exc_info[1] if record.exc_info else None
        record.args = (record.getMessage(), type(error).__name__, error, self._left_out)
        record.msg = "%s (%s: %s; %d like it left out)"
        record.exc_info, record.exc_text, self._left_out = None, None, 0
        return True


def one_line_retries() -> None:
    """Install :class:`RetryLines` on Celery's result backend logger (this process)."""
    logger = logging.getLogger("celery.backends.base")
    if not any(isinstance(f, RetryLines) for f in logger.filters):
        logger.addFilter(RetryLines())


def label_log_lines(node: str) -> None:
    """Put the node's name in every line this process logs (its root handlers').

    ``snakepool up`` shows every node's log in one stream: without the name, a line such
    as ``heartbeat failed: …`` could come from any of them. Passwords in URLs stay masked.

    Args:
        node: The node's name as given (``v3-1``, ``v3-1@host``).
    """
    from snakepool.config.secrets import RedactingFormatter

    label = node.replace("%", "%%")  # a literal in the format string
    fmt = f"%(asctime)s %(levelname)s {label} %(name)s: %(message)s"
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt))


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
    from celery.signals import worker_ready

    # The tracers are built now (the consumer starts before "ready"): from here on only
    # what is logged at call time is affected, i.e. failures, which must show again.
    worker_ready.connect(_failures_logged_again, weak=False)


def _failures_logged_again(**_: object) -> None:
    logging.getLogger("celery.app.trace").setLevel(logging.NOTSET)
