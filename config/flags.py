"""Runtime rollout flags, kept in Redis with a version and an audit trail.

The flags decide where traffic goes (see :func:`snakepool.tasks.rollout.routing.decide`):
the percentage
sent to V3, a forced lane (kill switch), the commands allowed on V3, per-session
overrides, shadowing. They change at run time with no restart: every change bumps the
version, and readers (:class:`FlagCache`) poll that version at most ``max_age`` seconds
apart, so a change is seen everywhere within a second. Every change is appended to an
audit stream: who, why, old → new.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

from snakepool.config.ids import COMMAND_NAME, SESSION_ID, is_valid
from snakepool.config.keys import DEFAULT_PREFIX, LANES, Keys
from snakepool.config.limits import (
    AUDIT_MAXLEN,
    AUDIT_SUMMARY_COMMANDS,
    MAX_AUDIT_DETAILS_BYTES,
    MAX_AUDIT_TEXT_CHARS,
    MAX_OVERRIDES,
    MAX_SCHEDULE_STEPS,
    MAX_V3_COMMANDS,
)

__all__ = ["AUDIT_MAXLEN", "LANES", "MAX_OVERRIDES", "FlagCache", "FlagStore", "RolloutFlags"]

#: Default promotion schedule, in percent sent to V3.
DEFAULT_SCHEDULE = (1, 5, 10, 25, 50, 100)


@dataclass(frozen=True)
class RolloutFlags:
    """One version of the rollout state."""

    percent: int = 0
    version: int = 0
    forced_lane: str | None = None
    v3_commands: tuple[str, ...] | None = None  # None: every command may go to V3
    overrides: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    shadow: bool = False
    shadow_rate: float = 1.0
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    previous_percent: int = 0
    updated_at: float = 0.0
    updated_by: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = asdict(self)
        data["v3_commands"] = list(self.v3_commands) if self.v3_commands is not None else None
        data["schedule"] = list(self.schedule)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutFlags:
        """From :meth:`to_dict` output (unknown keys ignored).

        Malformed override keys and command names, as an older version may have stored
        them (``"abc\n"``), are dropped: they could never be valid, and keeping them
        would make every later change (a rollback too) fail :meth:`validate`.
        """
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("overrides"), dict):
            known["overrides"] = {
                k: v for k, v in known["overrides"].items() if is_valid(SESSION_ID, k)
            }
        if known.get("v3_commands") is not None:
            known["v3_commands"] = tuple(
                c for c in known["v3_commands"] if is_valid(COMMAND_NAME, c)
            )
        if "schedule" in known:
            known["schedule"] = tuple(known["schedule"])
        return cls(**known)

    def validate(self) -> RolloutFlags:
        """Check the values.

        Raises:
            InvalidArguments: naming the bad value.
        """
        from snakepool.errors import InvalidArguments

        if isinstance(self.percent, bool) or not isinstance(self.percent, int):
            raise InvalidArguments("percent must be a whole number from 0 to 100")
        if not 0 <= self.percent <= 100:
            raise InvalidArguments(f"percent must be from 0 to 100, not {self.percent}")
        if self.forced_lane not in (None, *LANES):
            raise InvalidArguments(f"forced lane must be one of {LANES} or none")
        if any(lane not in LANES for lane in self.overrides.values()):
            raise InvalidArguments(f"override lanes must be one of {LANES}")
        if len(self.overrides) > MAX_OVERRIDES:
            raise InvalidArguments(f"at most {MAX_OVERRIDES} per-session overrides")
        bad_keys = [k for k in self.overrides if not is_valid(SESSION_ID, k)]
        if bad_keys:  # a list, not next(...): "" is a bad key and falsy
            bad = bad_keys[0]
            raise InvalidArguments(
                f"invalid session id {str(bad)[:40]!r} in overrides: "
                "use 1-128 characters of A-Z a-z 0-9 _ . : -"
            )
        if self.v3_commands is not None:
            if len(self.v3_commands) > MAX_V3_COMMANDS:
                raise InvalidArguments(f"at most {MAX_V3_COMMANDS} commands in the V3 allow-list")
            bad_commands = [c for c in self.v3_commands if not is_valid(COMMAND_NAME, c)]
            if bad_commands:
                bad = bad_commands[0]
                raise InvalidArguments(
                    f"invalid command name {str(bad)[:40]!r} in the V3 allow-list: "
                    "use 1-128 characters of A-Z a-z 0-9 _ . : -"
                )
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise InvalidArguments("shadow rate must be from 0 to 1")
        if not self.schedule or any(not 0 < p <= 100 for p in self.schedule):
            raise InvalidArguments("schedule must be percentages from 1 to 100")
        if len(self.schedule) > MAX_SCHEDULE_STEPS:
            raise InvalidArguments(f"a schedule has at most {MAX_SCHEDULE_STEPS} steps")
        return self


class FlagStore:
    """Reads and changes the flags in Redis (atomically, with an audit entry each).

    Args:
        client: redis-py client.
        prefix: Key prefix.
        audit_maxlen: Audit entries kept (the oldest are trimmed, exactly).
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, audit_maxlen: int = AUDIT_MAXLEN
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.audit_maxlen = audit_maxlen

    def read(self) -> RolloutFlags:
        """The current flags (defaults: 0 % to V3, version 0, when never set)."""
        raw = self.client.get(self.keys.rollout)
        return RolloutFlags.from_dict(json.loads(raw)) if raw else RolloutFlags()

    def version(self) -> int:
        """The current version (one cheap GET)."""
        return int(self.client.get(self.keys.rollout_version) or 0)

    def update(
        self,
        change: Callable[[RolloutFlags], RolloutFlags],
        *,
        who: str,
        why: str,
        details: dict[str, Any] | None = None,
    ) -> RolloutFlags:
        """Apply ``change`` to the current flags atomically; audit it; return the new flags.

        ``details`` (e.g. the metric snapshot behind a controller decision) is kept with
        the audit entry. Every entry is bounded: ``who`` and ``why`` are cut to
        ``MAX_AUDIT_TEXT_CHARS``, ``details`` over ``MAX_AUDIT_DETAILS_BYTES`` is replaced
        by its size (never refused: a rollback must not fail for a long reason).

        Raises:
            InvalidArguments: the changed flags are invalid (nothing is written).
        """
        who, why = _cut(who), _cut(why)
        details_json = _bounded_details(details)
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.keys.rollout)  # type: ignore[no-untyped-call]
                    raw = pipe.get(self.keys.rollout)
                    old = RolloutFlags.from_dict(json.loads(raw)) if raw else RolloutFlags()
                    new = replace(
                        change(old),
                        version=old.version + 1,
                        updated_at=time.time(),
                        updated_by=who,
                        reason=why,
                    ).validate()
                    pipe.multi()
                    pipe.set(self.keys.rollout, json.dumps(new.to_dict()))
                    pipe.set(self.keys.rollout_version, new.version)
                    pipe.xadd(
                        self.keys.audit,
                        {
                            "version": new.version,
                            "who": who,
                            "why": why,
                            "at": new.updated_at,
                            "old": json.dumps(_summary(old)),
                            "new": json.dumps(_summary(new)),
                            "details": details_json,
                        },
                        maxlen=self.audit_maxlen,
                        # Exact: flag changes are rare, and the bound is then exact too.
                        approximate=False,
                    )
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # someone else changed it first: apply ours on top of theirs

    def note(self, *, who: str, why: str, details: dict[str, Any] | None = None) -> None:
        """Append an event that changes no flag (a lane lost or back) to the audit trail.

        The entry has the shape of a change (``version``, ``old``, ``new``) with the
        current flags on both sides, so every reader of :meth:`history` takes it as is;
        ``details`` says what happened. Bounded like :meth:`update`'s entries.
        """
        current = self.read()
        summary = json.dumps(_summary(current))
        self.client.xadd(
            self.keys.audit,
            {
                "version": current.version,
                "who": _cut(who),
                "why": _cut(why),
                "at": time.time(),
                "old": summary,
                "new": summary,
                "details": _bounded_details(details),
            },
            maxlen=self.audit_maxlen,
            approximate=False,
        )

    def set_percent(self, percent: int, *, who: str, why: str) -> RolloutFlags:
        """Send ``percent`` % of keys to V3 (remembering the previous value for rollback)."""
        return self.update(
            lambda f: replace(f, percent=percent, previous_percent=f.percent), who=who, why=why
        )

    def rollback(
        self,
        *,
        who: str,
        why: str,
        to_previous: bool = False,
        details: dict[str, Any] | None = None,
    ) -> RolloutFlags:
        """Send everything back to V2-compat (or to the previous step) and pause."""
        return self.update(
            lambda f: replace(
                f,
                percent=_step_below(f) if to_previous else 0,
                previous_percent=f.percent,
                paused=True,
            ),
            who=who,
            why=why,
            details=details,
        )

    def step(self, *, who: str, why: str, details: dict[str, Any] | None = None) -> RolloutFlags:
        """Promote to the next step of the schedule (no-op at 100 %)."""
        return self.update(
            lambda f: replace(f, percent=next_step(f), previous_percent=f.percent),
            who=who,
            why=why,
            details=details,
        )

    def set_paused(self, paused: bool, *, who: str, why: str) -> RolloutFlags:
        """Pause or resume automatic promotion (rollbacks still happen)."""
        return self.update(lambda f: replace(f, paused=paused), who=who, why=why)

    def history(self, count: int = 50) -> list[dict[str, Any]]:
        """The newest audit entries, newest first."""
        entries = self.client.xrevrange(self.keys.audit, count=count) or []
        history = []
        for entry_id, fields in entries:
            decoded = {_text(k): _text(v) for k, v in (fields or {}).items()}
            history.append({
                "id": _text(entry_id),
                "version": int(decoded["version"]),
                "who": decoded["who"],
                "why": decoded["why"],
                "at": float(decoded["at"]),
                "old": json.loads(decoded["old"]),
                "new": json.loads(decoded["new"]),
                "details": json.loads(decoded.get("details") or "{}"),
            })  # fmt: skip
        return history


class FlagCache:
    """The flags as a hot path reads them: at most one GET per ``max_age`` seconds.

    Args:
        store: Where the flags live.
        max_age: Seconds between version checks (a change is seen within this).
    """

    def __init__(self, store: FlagStore, *, max_age: float = 0.5) -> None:
        self.store = store
        self.max_age = max_age
        self._flags = RolloutFlags()
        self._checked = float("-inf")

    def get(self) -> RolloutFlags:
        """The current flags, as of at most ``max_age`` seconds ago."""
        now = time.monotonic()
        if now - self._checked >= self.max_age:
            self._checked = now
            if self.store.version() != self._flags.version:
                self._flags = self.store.read()
        return self._flags


def next_step(flags: RolloutFlags) -> int:
    """The first step of the schedule above the current percentage (or 100)."""
    return next((p for p in sorted(flags.schedule) if p > flags.percent), 100)


def _step_below(flags: RolloutFlags) -> int:
    return max((p for p in flags.schedule if p < flags.percent), default=0)


def _summary(flags: RolloutFlags) -> dict[str, Any]:
    data = flags.to_dict()
    data["overrides"] = len(flags.overrides)
    if flags.v3_commands is not None and len(flags.v3_commands) > AUDIT_SUMMARY_COMMANDS:
        data["v3_commands"] = len(flags.v3_commands)  # a count, like the overrides
    for noise in ("updated_at", "updated_by", "reason", "version", "schedule"):
        data.pop(noise)
    return data


def _cut(text: str) -> str:
    text = str(text)
    if len(text) <= MAX_AUDIT_TEXT_CHARS:
        return text
    return text[: MAX_AUDIT_TEXT_CHARS - 1] + "…"


def _bounded_details(details: dict[str, Any] | None) -> str:
    encoded = json.dumps(details or {}, default=str)
    if len(encoded.encode()) <= MAX_AUDIT_DETAILS_BYTES:
        return encoded
    return json.dumps({"truncated": True, "bytes": len(encoded.encode())})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
