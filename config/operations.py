"""The settings of operating a migration: metrics, the settings profile, the controller.

Mixed into :class:`~snakepool.config.settings.Settings` (so they are read, named and
checked like every other setting: ``SNAKEPOOL_METRICS_PORT`` and ``SNAKEPOOL_METRICS_ADDRESS``,
the ``ROLLOUT_*`` settings,
``SNAKEPOOL_PROFILE``, or the same names in lower case in the TOML file).

The ``ROLLOUT_*`` settings are the rollout controller's policy
(:class:`~snakepool.tasks.rollout.controller.ControllerPolicy`): how long a step bakes,
how many V3 samples a verdict needs, the error-rate and p99 limits, where a rollback
goes and the schedule of steps it promotes along; and the lease that lets only one
controller act at a time.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from snakepool.config.limits import MAX_SCHEDULE_STEPS, METRICS_WINDOW_SECONDS

__all__ = [
    "DEFAULT_METRICS_ADDRESS",
    "DEFAULT_ROLLOUT_SCHEDULE",
    "PROFILE_NAMES",
    "OperationSettings",
    "parse_schedule",
]

#: The controller's default schedule: percentages sent to V3, one step at a time. The
#: same as the flags' own default
#: (``snakepool.config.rollout_flags.DEFAULT_SCHEDULE``, used by ``snakepool rollout step``).
DEFAULT_ROLLOUT_SCHEDULE = (1, 5, 10, 25, 50, 100)
#: The shipped presets ``SNAKEPOOL_PROFILE`` may name (``config/presets/<name>.toml``).
PROFILE_NAMES = ("dev", "staging", "prod")
#: Where ``/metrics`` listens by default: this host only. A node scraped over the network
#: (compose: Prometheus in another container) sets ``METRICS_ADDRESS=0.0.0.0``.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
#: Longest bake time, in seconds (30 days).
MAX_BAKE_SECONDS = 30 * 24 * 3600


def parse_schedule(value: Any) -> Any:
    """A schedule as written by a user, made a list: ``"1,5,10"``, ``"[1, 5, 10]"`` or a list.

    Anything else is returned as it is, for the field's own type check to refuse.
    """
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        parts = [part.strip() for part in text.split(",")]
        if parts == [""]:
            return []
        return [int(part) if part.lstrip("-").isdigit() else part for part in parts]
    return value


class OperationSettings(BaseModel):
    """Metrics, profile and controller settings (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    #: The shipped preset this configuration starts from (``dev``, ``staging``,
    #: ``prod``); explicit settings override it. None: the defaults below.
    profile: Literal["dev", "staging", "prod"] | None = None
    #: TCP port of a worker node's Prometheus ``/metrics`` (0: no metrics endpoint).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: The IP address ``/metrics`` listens on (``127.0.0.1``: this host only;
    #: ``0.0.0.0`` or ``::``: every interface).
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    #: Seconds between the controller's decisions.
    rollout_interval: float = Field(default=10.0, gt=0, le=3600)
    #: Seconds of lane metrics each decision looks at (at most the 600 s kept).
    rollout_window: int = Field(default=60, ge=1, le=METRICS_WINDOW_SECONDS)
    #: V3 requests needed in the window before any verdict on V3 (promote or roll back).
    rollout_min_samples: int = Field(default=50, ge=1, le=10_000_000)
    #: Roll back above this V3 server-error rate (client errors never count) ...
    rollout_max_error_rate: float = Field(default=0.05, ge=0, le=1)
    #: ... or when V3's error rate exceeds V2-compat's by more than this.
    rollout_max_error_excess: float = Field(default=0.02, ge=0, le=1)
    #: Roll back when V3's p99 is more than this multiple of V2-compat's.
    rollout_max_p99_ratio: float = Field(default=3.0, gt=0, le=1000)
    #: Seconds a step must run, healthy, before the controller promotes to the next.
    rollout_bake_seconds: float = Field(default=300.0, ge=0, le=MAX_BAKE_SECONDS)
    #: Where a rollback goes: ``zero`` (everything to V2-compat) or ``previous`` (the
    #: schedule's step below the current percentage).
    rollout_rollback_to: Literal["zero", "previous"] = "zero"
    #: The percentages the controller promotes along, ascending, each 1-100.
    rollout_schedule: tuple[int, ...] = DEFAULT_ROLLOUT_SCHEDULE
    #: Seconds a controller's lease lives unless renewed: a standby controller takes over
    #: this long after the acting one died (at once when it stopped cleanly).
    rollout_lease_ttl: float = Field(default=15.0, ge=1, le=3600)

    @field_validator("metrics_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(
                f"{value[:60]!r} is not an IP address (127.0.0.1: this host only; "
                "0.0.0.0: every interface)"
            ) from None

    @field_validator("rollout_schedule", mode="before")
    @classmethod
    def _schedule_as_list(cls, value: Any) -> Any:
        return parse_schedule(value)

    @field_validator("rollout_schedule")
    @classmethod
    def _schedule(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("needs at least one step")
        if len(value) > MAX_SCHEDULE_STEPS:
            raise ValueError(f"at most {MAX_SCHEDULE_STEPS} steps")
        if any(not 1 <= step <= 100 for step in value):
            raise ValueError("each step is a percentage from 1 to 100")
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise ValueError("steps must go up, each above the one before")
        return value
