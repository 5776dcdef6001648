"""What a client raises when a request cannot be sent, or its result does not come.

- Args Celery's JSON cannot encode are the caller's fault, found before anything went
  out (kombu encodes before it publishes): ``InvalidArguments`` naming the value at
  fault (:func:`unsendable_args`), never kombu's ``EncodeError``.
- A wait the caller got wrong is ``InvalidArguments`` before anything is sent or
  awaited (:func:`~snakepool.config.timeouts.checked_timeout`, :func:`checked_flags_wait`).
- A result that does not arrive within the caller's wait is
  :class:`~snakepool.errors.ResultTimeout` (:func:`result_timeout`), never Celery's
  ``TimeoutError`` alone — though it is that too, as callers caught it before.

Shared by :class:`~snakepool.tasks.client.Client` and
:class:`~snakepool.tasks.async_client.AsyncClient`.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any

from kombu.exceptions import EncodeError

from snakepool import errors
from snakepool.config.json_values import json_problem
from snakepool.config.quoting import describe
from snakepool.config.timeouts import checked_timeout
from snakepool.tasks.worker.results import ResultTimeout, result_timeout

__all__ = [
    "ResultTimeout", "checked_flags_wait", "checked_threads", "result_timeout", "unsendable_args",
]  # fmt: skip

#: Types Celery's JSON (kombu) encodes besides plain JSON's, as tagged objects.
KOMBU_TYPES = (bytes, datetime.datetime, datetime.date, datetime.time, Decimal, uuid.UUID)


def unsendable_args(
    command: str, args: Any, failure: BaseException
) -> errors.InvalidArguments | None:
    """The ``InvalidArguments`` for args that could not be sent (nothing was), or None.

    Celery fails on such args in two places, both before publishing: kombu's JSON
    encoder (an ``EncodeError``, always the message's content: the args) and Celery's
    ``argsrepr`` (a ``ValueError`` from ``str()`` of an integer past Python's limit).
    The error names the value at fault and why (``args['v']: set is not JSON-able``);
    kombu's message says neither where nor, for a long integer, that the limit is
    deliberate.

    Args:
        command: The request's command.
        args: Its arguments, as given.
        failure: What sending raised.

    Returns:
        None when ``failure`` is not about the args (a ``ValueError`` from elsewhere):
        the caller re-raises it.
    """
    problem = json_problem(args, "args", also=KOMBU_TYPES)
    if problem is None and not isinstance(failure, EncodeError):
        return None
    cause = failure.__context__ if isinstance(failure, EncodeError) else None
    cause = cause or failure
    return errors.InvalidArguments(
        f"args of {command[:80]!r} cannot be sent: {problem or str(cause)[:300]} (arguments "
        "must be JSON: objects with string keys, arrays, strings, numbers, true/false/null)",
        command=command[:80],
        reason=f"{type(cause).__name__}: {cause}"[:300],
    )


def checked_flags_wait(version: object, timeout: object) -> float:
    """The seconds of a wait for every node to route by flags ``version``.

    Raises:
        InvalidArguments: ``version`` is not an int, or ``timeout`` not a number of
            seconds in (0, 86400].
    """
    if isinstance(version, bool) or not isinstance(version, int):
        raise errors.InvalidArguments(f"version must be an int, not {type(version).__name__}")
    if not 0 <= version < 2**63:  # what Redis's INCR counts up to
        raise errors.InvalidArguments(
            f"version must be from 0 to 2**63 - 1, not {describe(version)}"
        )
    return checked_timeout(timeout)


def checked_threads(max_threads: object, default: int, most: int) -> int:
    """``max_threads`` (None: ``default``) if a whole number from 1 to ``most``.

    Raises:
        InvalidArguments: anything else.
    """
    if max_threads is None:
        return default
    if isinstance(max_threads, bool) or not isinstance(max_threads, int):
        raise errors.InvalidArguments(
            f"max_threads must be a whole number of threads, not {type(max_threads).__name__}"
        )
    if not 1 <= max_threads <= most:
        raise errors.InvalidArguments(
            f"max_threads must be from 1 to {most}, not {describe(max_threads)}"
        )
    return max_threads
