"""The bounded Redis form of shadow records: outcomes and kept mismatches.

A lane's outcome can be as large as ``MAX_MESSAGE_BYTES`` (16 MiB by default); a pair
record holds two and every kept mismatch two more. So before anything is written an
outcome larger than :data:`~snakepool.config.limits.SHADOW_VALUE_MAX_BYTES` is
*compacted*: its value is replaced by the SHA-256 of its canonical JSON, its size and
its first bytes. Two compacted outcomes still compare correctly for equality (equal
values, equal digests), but exactly: the comparator's float tolerance does not apply
to them. Keys the comparator ignores are removed before hashing, so an ignored field
(a pid, an uptime) does not make two large results differ.

Data flow::

    lane outcome ── compact_outcome ── shadow_record.lua (pair hash, TTL) ── comparator
                                                                  └── mismatch_entry ── capped list
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from snakepool.config.limits import (
    SHADOW_COMMAND_CHARS,
    SHADOW_DIFF_CHARS,
    SHADOW_VALUE_MAX_BYTES,
)

__all__ = ["COMPACTED", "HEAD_CHARS", "MAX_DIFFS", "compact_outcome", "mismatch_entry"]

#: The key a compacted value is kept under: ``{"$compacted": {"sha256", "bytes", "head"}}``.
COMPACTED = "$compacted"
#: Characters of the canonical JSON kept as a compacted value's head (for reading).
HEAD_CHARS = 200
#: Differences a kept mismatch lists at most.
MAX_DIFFS = 20


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _without(value: Any, ignored: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [_without(v, ignored) for v in value]
    return value


def compact_outcome(
    outcome: dict[str, Any],
    *,
    max_bytes: int = SHADOW_VALUE_MAX_BYTES,
    ignored_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """``outcome`` itself if its JSON fits in ``max_bytes``, else its compacted form.

    Args:
        outcome: ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": {...}}``.
        max_bytes: Largest outcome kept whole, as UTF-8 JSON bytes.
        ignored_keys: Keys (at any depth) left out of a compacted value's digest.

    Returns:
        An outcome whose JSON is at most ``max_bytes``, or at most about 1.5 KiB: a
        value replaced by ``{"$compacted": {"sha256", "bytes", "head"}}``, an error cut
        to its type and the start of its message.
    """
    if len(_canonical(outcome).encode()) <= max_bytes:
        return outcome
    if not outcome.get("ok"):
        # Errors compare by type (error parity): keep it, cut the message.
        error = outcome.get("error")
        error = error if isinstance(error, dict) else {}
        return {
            "ok": False,
            "error": {
                "type": str(error.get("type"))[:SHADOW_COMMAND_CHARS],
                "message": str(error.get("message"))[:SHADOW_DIFF_CHARS],
            },
        }
    stripped = _canonical(_without(outcome.get("value"), frozenset(ignored_keys)))
    encoded = stripped.encode()
    compacted = {
        "sha256": hashlib.sha256(encoded).hexdigest(),
        "bytes": len(encoded),
        "head": stripped[:HEAD_CHARS],
    }
    return {"ok": True, "value": {COMPACTED: compacted}}


def mismatch_entry(
    request_id: str,
    command: str,
    primary: dict[str, Any],
    shadow: dict[str, Any],
    diffs: list[str],
    *,
    at: float,
) -> str:
    """The JSON of one kept mismatch, bounded.

    The outcomes are compacted (as in the pair record), the command name and each
    difference are cut, and at most :data:`MAX_DIFFS` differences are kept, so an entry
    is at most about ``2 * SHADOW_VALUE_MAX_BYTES + MAX_DIFFS * SHADOW_DIFF_CHARS``.
    """
    return json.dumps(
        {
            "request_id": request_id,
            "command": command[:SHADOW_COMMAND_CHARS],
            "at": at,
            "primary": compact_outcome(primary),
            "shadow": compact_outcome(shadow),
            "diff": [d[:SHADOW_DIFF_CHARS] for d in diffs[:MAX_DIFFS]],
        },
        default=str,
    )
