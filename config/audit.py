"""The audit trail's entries: what a flag change writes, bounded, and how it reads back.

Every entry is bounded (``who``/``why`` cut to ``MAX_AUDIT_TEXT_CHARS``, ``details``
over ``MAX_AUDIT_DETAILS_BYTES`` replaced by its size, long command lists counted), so
the stream's memory is bounded by its exact ``MAXLEN``.
"""

from __future__ import annotations

import json
from typing import Any

from snakepool.config.limits import (
    AUDIT_SUMMARY_COMMANDS,
    MAX_AUDIT_DETAILS_BYTES,
    MAX_AUDIT_TEXT_CHARS,
)
from snakepool.config.rollout_flags import RolloutFlags

__all__ = ["as_text", "audit_entry", "bounded_details", "cut", "flags_summary"]


def flags_summary(flags: RolloutFlags) -> dict[str, Any]:
    """The flags as an audit entry's ``old``/``new`` shows them (overrides and long
    command lists counted; version, author, reason and schedule left out)."""
    data = flags.to_dict()
    data["overrides"] = len(flags.overrides)
    for name in ("v3_commands", "excluded_commands"):
        commands = getattr(flags, name)
        if commands is not None and len(commands) > AUDIT_SUMMARY_COMMANDS:
            data[name] = len(commands)  # a count, like the overrides
    for noise in ("updated_at", "updated_by", "reason", "version", "schedule"):
        data.pop(noise)
    return data


def cut(text: str) -> str:
    """``text`` cut to ``MAX_AUDIT_TEXT_CHARS`` (ending with "…" when cut)."""
    text = str(text)
    if len(text) <= MAX_AUDIT_TEXT_CHARS:
        return text
    return text[: MAX_AUDIT_TEXT_CHARS - 1] + "…"


def bounded_details(details: dict[str, Any] | None) -> str:
    """``details`` as JSON, or ``{"truncated", "bytes"}`` when over the size cap."""
    encoded = json.dumps(details or {}, default=str)
    if len(encoded.encode()) <= MAX_AUDIT_DETAILS_BYTES:
        return encoded
    return json.dumps({"truncated": True, "bytes": len(encoded.encode())})


def audit_entry(entry_id: Any, fields: Any) -> dict[str, Any]:
    """One audit entry as :meth:`FlagStore.history` returns it.

    Raises:
        KeyError, ValueError, TypeError, AttributeError: a field missing or unreadable.
    """
    decoded = {as_text(k): as_text(v) for k, v in fields.items()}
    entry = {
        "id": as_text(entry_id),
        "version": int(decoded["version"]),
        "who": decoded["who"],
        "why": decoded["why"],
        "at": float(decoded["at"]),
        "old": json.loads(decoded["old"]),
        "new": json.loads(decoded["new"]),
        "details": json.loads(decoded.get("details") or "{}"),
    }
    if not all(isinstance(entry[name], dict) for name in ("old", "new", "details")):
        raise TypeError("old, new and details must be JSON objects")
    return entry


def as_text(value: Any) -> str:
    """A Redis reply (bytes or str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
