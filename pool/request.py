"""A request made ready for the wire before any interpreter is leased.

An argument that cannot cross the pipe is the caller's fault and must never cost an
interpreter: it is found here, in the caller's thread, and reported as
:class:`~snakepool.errors.InvalidArguments` (or ``PayloadTooLarge``) while no
interpreter is involved. What counts as sendable:

* whatever the wire encoder (:func:`snakepool.pool.interpreter.wire.framed_request`)
  accepts — its ``TypeError`` / ``ValueError`` / ``OverflowError`` become
  ``InvalidArguments`` naming the problem. That includes the integer limit: integers
  are exact up to 4300 digits (Python's int/str conversion limit, which every JSON hop
  enforces; :data:`~snakepool.pool.interpreter.values.MAX_INT_DIGITS`), and a longer
  one is refused here rather than sent somewhere it could not be parsed;
* and, because a command receives JSON-like data, dict keys that are strings (msgpack
  would carry ``1`` or ``(1, 2)`` as keys, and a tuple key kills the interpreter that
  decodes it) and nesting at most :data:`MAX_NESTING` containers deep.
"""

from __future__ import annotations

from typing import Any

from snakepool import errors
from snakepool.config.ids import validate_session_id
from snakepool.pool.interpreter import wire

__all__ = ["MAX_NESTING", "check_scope", "encode_request", "nested_too_deep"]

#: Deepest nesting of dicts/lists in a request's args. Deep enough for any real JSON
#: document; shallow enough that code walking a value recursively (commands, Celery's
#: JSON result backend on the way back) stays far from Python's recursion limit (1000).
MAX_NESTING = 256

_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
# A path through nested args, built only when it is reported: (parent trail, key).
_Trail = tuple[Any, ...] | None


def encode_request(
    rid: int,
    command: str,
    args: Any,
    *,
    limit: int,
    session: str | None = None,
    transient: bool = False,
) -> bytes:
    """The whole request frame (header included) for ``command`` with ``args``.

    Args:
        rid: Request id (echoed by the interpreter in its reply).
        command: Command name.
        args: Its arguments: a dict with str keys of JSON-like values.
        limit: Largest payload in bytes (``max_message_bytes``).
        session: The session the request runs in (interpreter state is keyed by it).
        transient: The request must leave no state in the interpreter.

    Raises:
        InvalidArguments: ``command`` is not a non-empty str, ``args`` not a dict, a key
            not a str, nesting deeper than :data:`MAX_NESTING`, or a value the wire
            cannot carry — an integer of more than 4300 digits too (the message names
            the value's path and type or the problem).
        PayloadTooLarge: the encoded request is over ``limit`` (data: ``size``,
            ``limit``, ``direction="request"``).
    """
    if not isinstance(command, str) or not command:
        raise errors.InvalidArguments("command must be a non-empty string")
    if not isinstance(args, dict):
        raise errors.InvalidArguments(f"args must be a dict, not {type(args).__name__}")
    if args:  # no walk for no args (a ping)
        _check_shape(args)
    try:
        framed = wire.framed_request(rid, command, args, session=session, transient=transient)
    except (TypeError, ValueError, OverflowError) as exc:
        raise errors.InvalidArguments(
            f"args of {command!r} cannot be sent to an interpreter: {exc} "
            "(arguments must be JSON-like: dicts with str keys, lists, str, int, float, "
            "bool, None)",
            command=command,
            reason=f"{type(exc).__name__}: {exc}",
        ) from None
    size = len(framed) - wire.HEADER.size
    if size > limit:
        raise errors.PayloadTooLarge(
            f"request of {size} bytes exceeds max_message_bytes={limit}",
            size=size,
            limit=limit,
            direction="request",
        )
    return framed


def _check_shape(args: dict[str, Any]) -> None:
    """Reject non-str keys and nesting past :data:`MAX_NESTING` (iteratively: a deep
    value must not exhaust this thread's stack either). On the hot path of every
    request, hence the scalar shortcut and no allocation for flat args."""
    value: Any = args
    depth, trail = 1, None
    pending: list[tuple[Any, int, _Trail]] = []
    while True:
        if isinstance(value, dict):
            for key, item in value.items():
                if type(key) is not str and not isinstance(key, str):
                    where = _path(trail)
                    raise errors.InvalidArguments(
                        f"dict keys must be strings: {where} has the key {key!r} "
                        f"of type {type(key).__name__}",
                        path=where,
                        key_type=type(key).__name__,
                    )
                if type(item) not in _SCALARS and isinstance(item, _CONTAINERS):
                    pending.append((item, depth + 1, (trail, key)))
        else:
            for index, item in enumerate(value):
                if type(item) not in _SCALARS and isinstance(item, _CONTAINERS):
                    pending.append((item, depth + 1, (trail, index)))
        if not pending:
            return
        value, depth, trail = pending.pop()
        if depth > MAX_NESTING:
            raise errors.InvalidArguments(
                f"args are nested more than {MAX_NESTING} levels deep (at {_path(trail, limit=8)})",
                max_nesting=MAX_NESTING,
            )


def _path(trail: _Trail, *, limit: int | None = None) -> str:
    """``args['a'][0]`` for the trail of keys; only the first ``limit`` steps if given."""
    keys: list[Any] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    keys.reverse()
    shown = keys if limit is None or len(keys) <= limit else keys[:limit]
    text = "args" + "".join(f"[{key!r}]" for key in shown)
    return text if shown is keys else f"{text}... ({len(keys)} levels)"


def nested_too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` holds dicts/lists nested more than ``limit`` deep (iteratively).

    For results: the pipe carries up to 1000 levels, but a result that goes on as JSON
    (Celery's result backend encodes it recursively) must stay as shallow as the args
    a request may carry.
    """
    if type(value) in _SCALARS or not isinstance(value, _CONTAINERS):
        return False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend(
            (child, depth + 1)
            for child in children
            if type(child) not in _SCALARS and isinstance(child, _CONTAINERS)
        )
    return False


def check_scope(affinity: object, session: object) -> None:
    """Refuse an affinity key that is not a string, a session id that is not one.

    Raises:
        InvalidArguments: naming which (a session id keys interpreter state, so it is
            checked whole, like every id: ``"abc\\n"`` is not ``"abc"``).
    """
    if affinity is not None and not isinstance(affinity, str):
        raise errors.InvalidArguments(
            f"affinity must be a string or None, not {type(affinity).__name__}"
        )
    if session is not None:
        validate_session_id(session)
