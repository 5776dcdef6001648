"""Comparing the two lanes' outcomes of one shadowed request.

An outcome is ``{"ok": True, "value": result}`` or ``{"ok": False, "error": {"type",
"message"}}``. Rules: keys that legitimately differ between interpreters (pids, uptimes)
are ignored at any depth; floats are equal within a tolerance; two errors match when
they are of the same type (error parity), whatever their messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_IGNORED_KEYS", "Comparator"]

#: Keys whose values differ between any two interpreters by nature.
DEFAULT_IGNORED_KEYS = frozenset({"pid", "uptime_s", "rss_bytes", "requests", "errors", "slept"})
#: At most this many differences are reported per comparison.
MAX_DIFFS = 20


@dataclass(frozen=True)
class Comparator:
    """Decides whether two outcomes agree and says where they do not."""

    ignored_keys: frozenset[str] = field(default=DEFAULT_IGNORED_KEYS)
    rel_tolerance: float = 1e-9
    abs_tolerance: float = 1e-9
    error_parity: bool = True

    def compare(self, first: dict[str, Any], second: dict[str, Any]) -> list[str]:
        """The differences between two outcomes (empty: they match)."""
        if first.get("ok") != second.get("ok"):
            return [f"one lane succeeded, the other failed: {_brief(first)} vs {_brief(second)}"]
        if not first.get("ok"):
            a, b = first.get("error", {}), second.get("error", {})
            if self.error_parity and a.get("type") == b.get("type"):
                return []
            return [f"errors differ: {a.get('type')} vs {b.get('type')}"]
        diffs: list[str] = []
        self._walk(first.get("value"), second.get("value"), "$", diffs)
        return diffs[:MAX_DIFFS]

    def _walk(self, a: Any, b: Any, path: str, diffs: list[str]) -> None:
        if len(diffs) >= MAX_DIFFS:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key in self.ignored_keys:
                    continue
                if key not in a or key not in b:
                    diffs.append(f"{path}.{key}: only in {'second' if key not in a else 'first'}")
                else:
                    self._walk(a[key], b[key], f"{path}.{key}", diffs)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                diffs.append(f"{path}: lengths {len(a)} vs {len(b)}")
            for index, (x, y) in enumerate(zip(a, b, strict=False)):
                self._walk(x, y, f"{path}[{index}]", diffs)
        elif _number(a) and _number(b) and (isinstance(a, float) or isinstance(b, float)):
            if not math.isclose(a, b, rel_tol=self.rel_tolerance, abs_tol=self.abs_tolerance):
                diffs.append(f"{path}: {a!r} vs {b!r}")
        elif a != b or type(a) is not type(b):
            diffs.append(f"{path}: {_short(a)} vs {_short(b)}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _brief(outcome: dict[str, Any]) -> str:
    if outcome.get("ok"):
        return "ok"
    return str(outcome.get("error", {}).get("type"))
