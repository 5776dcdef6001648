"""One version of the rollout state: what decides where traffic goes.

:class:`RolloutFlags` is plain data with its own checks (:meth:`RolloutFlags.validate`);
:mod:`snakepool.config.flags` keeps it in Redis, versioned and audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from snakepool.config.flag_fields import check_stored_flags
from snakepool.config.ids import COMMAND_NAME, SESSION_ID, is_valid
from snakepool.config.keys import LANES
from snakepool.config.limits import MAX_OVERRIDES, MAX_SCHEDULE_STEPS, MAX_V3_COMMANDS
from snakepool.config.quoting import describe
from snakepool.errors import InvalidArguments

__all__ = ["DEFAULT_SCHEDULE", "RolloutFlags", "next_step", "step_below"]

#: Default promotion schedule, in percent sent to V3.
DEFAULT_SCHEDULE = (1, 5, 10, 25, 50, 100)


@dataclass(frozen=True)
class RolloutFlags:
    """One version of the rollout state."""

    percent: int = 0
    version: int = 0
    forced_lane: str | None = None
    v3_commands: tuple[str, ...] | None = None  # None: every command may go to V3
    #: Commands kept on V2-compat whatever the percentage (``rollout exclude``).
    excluded_commands: tuple[str, ...] = ()
    #: The migration is over: everything goes to V3 (``rollout finalize``).
    finalized: bool = False
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
        data["excluded_commands"] = list(self.excluded_commands)
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
        for name in ("v3_commands", "excluded_commands"):
            if known.get(name) is not None:
                known[name] = tuple(c for c in known[name] if is_valid(COMMAND_NAME, c))
        if "schedule" in known:
            known["schedule"] = tuple(known["schedule"])
        return cls(**known)

    def validate(self) -> RolloutFlags:
        """Check the values: each of the type a reader of the stored flags accepts
        (:func:`~snakepool.config.flag_fields.check_stored_flags`), and in its range.

        Raises:
            InvalidArguments: naming the bad value.
        """
        if isinstance(self.percent, bool) or not isinstance(self.percent, int):
            raise InvalidArguments("percent must be a whole number from 0 to 100")
        if not 0 <= self.percent <= 100:
            raise InvalidArguments(f"percent must be from 0 to 100, not {describe(self.percent)}")
        try:  # what is written must read back: a reader refuses any field of a wrong type
            check_stored_flags(self.to_dict())
        except (ValueError, TypeError) as exc:  # TypeError: to_dict() on a wrong type
            raise InvalidArguments(f"invalid rollout flags: {exc}") from None
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
        _check_commands("the V3 allow-list", self.v3_commands)
        _check_commands("the exclusions", self.excluded_commands)
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise InvalidArguments("shadow rate must be from 0 to 1")
        if not self.schedule or any(not 0 < p <= 100 for p in self.schedule):
            raise InvalidArguments("schedule must be percentages from 1 to 100")
        if len(self.schedule) > MAX_SCHEDULE_STEPS:
            raise InvalidArguments(f"a schedule has at most {MAX_SCHEDULE_STEPS} steps")
        return self


def next_step(flags: RolloutFlags) -> int:
    """The first step of the schedule above the current percentage (or 100)."""
    return next((p for p in sorted(flags.schedule) if p > flags.percent), 100)


def step_below(flags: RolloutFlags) -> int:
    """The last step of the schedule below the current percentage (or 0)."""
    return max((p for p in flags.schedule if p < flags.percent), default=0)


def _check_commands(what: str, commands: tuple[str, ...] | None) -> None:
    """Refuse a command list that is too long or names a malformed command."""
    if commands is None:
        return
    if len(commands) > MAX_V3_COMMANDS:
        raise InvalidArguments(f"at most {MAX_V3_COMMANDS} commands in {what}")
    bad_commands = [c for c in commands if not is_valid(COMMAND_NAME, c)]
    if bad_commands:  # a list, not next(...): "" is a bad name and falsy
        raise InvalidArguments(
            f"invalid command name {str(bad_commands[0])[:40]!r} in {what}: "
            "use 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
