"""The scope of the request an interpreter is running: whose it is, and whether it may
leave state behind.

An interpreter is shared: on the V2-compat lane one interpreter serves many sessions,
one request at a time. Every request carries its scope on the wire
(:class:`~snakepool.pool.interpreter.wire.Request`), the server sets it here before
running the command, and a command that keeps anything between requests reads it:

- :func:`current_session` — the session the request belongs to (``None``: no
  session). Per-session state must be keyed by it, so one session never sees, replaces
  or deletes another's.
- :func:`is_transient` — the request must leave no state behind: a shadow copy (it
  may only observe) or the stateless V3 lane (nothing lives in an interpreter there).
  Caches that are invisible to callers (compiled programs keyed by content) are fine.

One request at a time per interpreter, so two module-level fields are enough: no
locks, no context variables on the hot path.
"""

from __future__ import annotations

__all__ = ["SCOPE", "RequestScope", "begin", "current_session", "is_transient"]


class RequestScope:
    """The scope of the request being run; the server writes it, commands read it."""

    __slots__ = ("session", "transient")

    def __init__(self) -> None:
        self.session: str | None = None
        self.transient = False


#: This interpreter's one scope (one request at a time).
SCOPE = RequestScope()


def current_session() -> str | None:
    """The session id of the request being run (``None`` outside a session)."""
    return SCOPE.session


def is_transient() -> bool:
    """Whether the request being run must leave no state in this interpreter."""
    return SCOPE.transient


def begin(session: str | None, transient: bool) -> None:
    """Enter a request's scope, as the server does before each command (for running
    commands in-process, e.g. in tests)."""
    SCOPE.session = session
    SCOPE.transient = transient
