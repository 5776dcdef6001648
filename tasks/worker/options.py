"""What a lane request carries besides command and args: session id, options, shadow tag.

- **The session id** becomes part of Redis keys, so it is checked as a full match
  (:func:`checked_session_id`) wherever a request enters: client, router, lane.

Two kinds of options, kept apart so a caller can never set the second:

- **Caller options** are the task's keyword arguments (``**options``). There is one,
  ``timeout``; any other name is :class:`~snakepool.errors.InvalidArguments`, at the
  client, at the router and at the lane alike.
- **The shadow tag** (which copy of a shadowed request this is, and the request id both
  copies are recorded under) travels in a Celery message header that only our dispatch
  code sets (:mod:`snakepool.tasks.worker.dispatch`); neither ``Client.submit`` nor the
  router forwards a caller's headers. A tag is believed only when it holds up: its pair id
  is one of our request ids (a full match of 32 hex digits, so it can never name another
  key such as ``shadow:counts``) and it agrees with the id of the task carrying it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from snakepool.config.keys import SESSION_ID, validate_session_id
from snakepool.config.quoting import describe
from snakepool.config.timeouts import checked_timeout
from snakepool.errors import InvalidArguments
from snakepool.tasks.rollout.shadow import is_pair_id

__all__ = [
    "CALLER_OPTIONS",
    "MAX_TIMEOUT_SECONDS",
    "SHADOW_HEADER",
    "LaneOptions",
    "ShadowTag",
    "checked_session_id",
    "is_shadow_task_id",
    "shadow_task_id",
]

log = logging.getLogger("snakepool.lanes")

#: The options a caller may set.
CALLER_OPTIONS = frozenset({"timeout"})
#: The longest ``timeout`` a client or router accepts (the ceiling of ``REQUEST_TIMEOUT``);
#: a lane accepts at most its own ``REQUEST_TIMEOUT``.
MAX_TIMEOUT_SECONDS = 86400.0
#: The message header holding the shadow tag.
SHADOW_HEADER = "snakepool_shadow"
#: Appended to the request id to make the shadow copy's task id.
_SHADOW_SUFFIX = "-shadow"

Role = Literal["primary", "shadow"]


def checked_session_id(session_id: object) -> str:
    """``session_id`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``, all of it.

    :func:`~snakepool.config.keys.validate_session_id` plus a full match of its pattern:
    a ``^...$`` pattern tried with ``match`` lets one final newline through, and the id
    becomes part of the session's keys.

    Raises:
        InvalidArguments: anything else.
    """
    valid = validate_session_id(session_id)
    if SESSION_ID.fullmatch(valid) is None:
        raise InvalidArguments(
            f"invalid session id {describe(valid)}: use 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
    return valid


@dataclass(frozen=True)
class LaneOptions:
    """The caller's options, checked.

    Attributes:
        timeout: Seconds the command may run, or None for the pool's ``REQUEST_TIMEOUT``.
    """

    timeout: float | None = None

    @classmethod
    def parse(
        cls, options: Mapping[str, Any], *, max_timeout: float = MAX_TIMEOUT_SECONDS
    ) -> LaneOptions:
        """Check what a caller sent.

        Args:
            options: The task's keyword arguments.
            max_timeout: The largest ``timeout`` accepted, in seconds. A lane passes its
                ``REQUEST_TIMEOUT``: the shutdown grace and the visibility timeout are
                sized from it, so a longer run could be cut short by a warm shutdown or
                redelivered while it still runs.

        Raises:
            InvalidArguments: an unknown option, or ``timeout`` not a finite number of
                seconds in ``(0, max_timeout]``.
        """
        unknown = sorted(str(name)[:40] for name in options if name not in CALLER_OPTIONS)
        if unknown:
            raise InvalidArguments(
                f"unknown option(s) {', '.join(map(repr, unknown[:5]))}: "
                f"callers may set only {', '.join(sorted(CALLER_OPTIONS))}"
            )
        timeout = options.get("timeout")
        if timeout is None:
            return cls()
        # Compared, never converted first: an int past a float's range (10**400, which
        # JSON carries) made math.isfinite raise OverflowError, and the lane's
        # validation then let the request through with the default timeout.
        return cls(timeout=checked_timeout(timeout, what="option 'timeout'", maximum=max_timeout))

    def to_kwargs(self) -> dict[str, Any]:
        """The options as task keyword arguments (only those set)."""
        return {} if self.timeout is None else {"timeout": self.timeout}


def shadow_task_id(request_id: str) -> str:
    """The task id of the shadow copy of request ``request_id``."""
    return f"{request_id}{_SHADOW_SUFFIX}"


def is_shadow_task_id(task_id: object) -> bool:
    """Whether ``task_id`` is the task id of a shadow copy (:func:`shadow_task_id`)."""
    return (
        isinstance(task_id, str) and task_id.endswith(_SHADOW_SUFFIX)
        and is_pair_id(task_id[: -len(_SHADOW_SUFFIX)])
    )  # fmt: skip


@dataclass(frozen=True)
class ShadowTag:
    """Which copy of a shadowed request a lane message is.

    Attributes:
        role: ``"primary"`` (the caller's request) or ``"shadow"`` (the copy on the
            other lane, whose result goes nowhere).
        pair: The request id both outcomes are recorded under.
    """

    role: Role
    pair: str

    def __post_init__(self) -> None:
        if self.role not in ("primary", "shadow") or not is_pair_id(self.pair):
            raise ValueError(f"not a shadow tag: {self.role!r}, {self.pair!r}")

    @property
    def task_id(self) -> str:
        """The id of the task that may carry this tag."""
        return self.pair if self.role == "primary" else shadow_task_id(self.pair)

    def headers(self) -> dict[str, Any]:
        """The message headers that carry this tag."""
        return {SHADOW_HEADER: {"role": self.role, "pair": self.pair}}

    @classmethod
    def of(cls, request: Any) -> ShadowTag | None:
        """The tag of the task being run (its Celery ``request``), if it has a valid one.

        A tag that does not hold up is logged and ignored: the request then runs as an
        ordinary one and nothing is recorded for it.
        """
        headers = getattr(request, "headers", None)
        raw = headers.get(SHADOW_HEADER) if isinstance(headers, dict) else None
        if raw is None:
            return None
        try:
            tag = cls(role=raw["role"], pair=raw["pair"])
        except (TypeError, KeyError, ValueError):
            tag = None
        task_id = getattr(request, "id", None)
        if tag is None or tag.task_id != task_id:
            log.warning("ignoring an invalid shadow tag on task %.80r", task_id)
            return None
        return tag
