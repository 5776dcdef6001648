"""The stored rollout flags, checked field by field before anything believes them.

The flags are one JSON value in Redis (``{prefix}rollout``), written only by
:class:`~snakepool.config.flags.FlagStore`; anything else may still write there (an
operator's ``redis-cli SET``, a restore from an old backup). A value whose fields do not
have the types the flags are made of must never be half-read: ``"v3_commands": "ping"``
would become the commands ``p``, ``i``, ``n``, ``g``. :func:`check_stored_flags` refuses
it, naming the first field that is wrong; unknown fields are left for the reader to
ignore (a newer version may have written them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from snakepool.errors import ConfigError

__all__ = ["check_stored_flags", "parse_stored_flags", "unreadable_flags"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    # An int is finite; math.isfinite(2**1024) would raise OverflowError instead.
    return isinstance(value, int) or math.isfinite(value)


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_overrides(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(lane, str) for lane in value.values())


def _is_schedule(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(step) for step in value)


#: Field → (whether a stored value has its type, what it must be). ``None`` stands for
#: "every command" (``v3_commands``) and "no lane forced" (``forced_lane``).
_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "percent": (_is_int, "a whole number"),
    "version": (_is_int, "a whole number"),
    "previous_percent": (_is_int, "a whole number"),
    "finalized": (lambda v: isinstance(v, bool), "true or false"),
    "paused": (lambda v: isinstance(v, bool), "true or false"),
    "shadow": (lambda v: isinstance(v, bool), "true or false"),
    "shadow_rate": (_is_number, "a finite number"),
    "updated_at": (_is_number, "a finite number"),
    "updated_by": (lambda v: isinstance(v, str), "a string"),
    "reason": (lambda v: isinstance(v, str), "a string"),
    "forced_lane": (lambda v: v is None or isinstance(v, str), "a lane or null"),
    "v3_commands": (lambda v: v is None or _is_texts(v), "a list of command names or null"),
    "excluded_commands": (_is_texts, "a list of command names"),
    "overrides": (_is_overrides, "an object of session id → lane"),
    "schedule": (_is_schedule, "a list of whole percentages"),
}


def check_stored_flags(data: object) -> dict[str, Any]:
    """``data`` (the parsed JSON of the stored flags) if every field has its type.

    Values are not range-checked here: :meth:`RolloutFlags.validate
    <snakepool.config.flags.RolloutFlags.validate>` does that once they are flags.

    Raises:
        ValueError: not a JSON object, or naming the first field of the wrong type.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    for name, (has_type, expected) in _FIELDS.items():
        if name in data and not has_type(data[name]):
            raise ValueError(f"{name} must be {expected}, not {str(data[name])[:40]!r}")
    return data


def parse_stored_flags(raw: bytes | str) -> dict[str, Any]:
    """The stored flags' JSON, parsed and checked by :func:`check_stored_flags`.

    Raises:
        ValueError: not UTF-8, not JSON (nested too deeply too), or a field of the wrong
            type; the message says which.
    """
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply to be flags") from None
    return check_stored_flags(data)


def unreadable_flags(key: str, why: str) -> ConfigError:
    """The error for flags that cannot be read from ``key``: what is wrong, and the way
    out (any change writes them anew, and is audited)."""
    return ConfigError(
        f"the rollout flags in Redis key {key!r} cannot be read ({why[:200]}): routing keeps "
        "the last flags it read; `snakepool rollout rollback --reason …` (or `rollout set "
        "N`) writes them anew",
        key=key,
        reason=why[:200],
    )
