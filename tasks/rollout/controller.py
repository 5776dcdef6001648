"""The rollout controller: promote, hold or roll back, from the lanes' own figures.

Every ``interval`` seconds it reads, for each lane, the requests, server errors (client
errors excluded: a bad request is not V3's fault) and latency samples of **one window**
— the last ``window_seconds`` whole seconds, the current one included, but never from
before the second the current step began (the flags' last change) — so the error rate,
the sample count and the p99 it judges all cover exactly the same requests, and a step
is judged on its own traffic only (:meth:`RolloutController.window`). Then it:

- **rolls back** (to 0 %, or to the previous step) when V3 has enough samples and its
  error rate is over the limit or over V2-compat's by a margin, or its p99 is a multiple
  of V2-compat's — and pauses, so a person looks before it moves again;
- **promotes** to the next step of the schedule when the current step has baked long
  enough with enough V3 samples and nothing is wrong;
- otherwise **holds**, and says why.

Every change it makes goes to the audit trail with the metric snapshot behind it (and
the acting controller's id and fencing token). It never starts a rollout: 0 % stays 0 %
until someone sets a first step.

The policy comes from the ``ROLLOUT_*`` settings (:meth:`ControllerPolicy.from_settings`);
only the controller holding the lease (:mod:`~snakepool.tasks.rollout.lease`) acts, the
others stand by and take over when it stops or dies. Its changes are fenced: one made
under a lease that another controller has since taken is refused
(:class:`~snakepool.errors.StaleFence`, logged) and the controller goes back to standby.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from snakepool.config.fence import Fence
from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.config.keys import LANES
from snakepool.config.operations import DEFAULT_ROLLOUT_SCHEDULE
from snakepool.errors import StaleFence
from snakepool.tasks.rollout.lease import ControllerLease
from snakepool.tasks.rollout.metrics import LaneMetrics

if TYPE_CHECKING:
    from snakepool.config import Settings

__all__ = ["ControllerPolicy", "Decision", "RolloutController"]

log = logging.getLogger("snakepool.controller")


@dataclass(frozen=True)
class ControllerPolicy:
    """Thresholds and schedule; the defaults are conservative (and the ``ROLLOUT_*``
    settings' defaults)."""

    #: Whole seconds of lane metrics each decision looks at (clipped at the step's start).
    window_seconds: int = 60
    #: V3 requests needed in the window before any verdict on V3.
    min_samples: int = 50
    #: Roll back above this V3 error rate ...
    max_error_rate: float = 0.05
    #: ... or when V3's error rate exceeds V2-compat's by this much.
    max_error_excess: float = 0.02
    #: Roll back when V3's p99 is more than this multiple of V2-compat's.
    max_p99_ratio: float = 3.0
    #: Seconds a step must run before the next promotion.
    bake_seconds: float = 300.0
    #: Roll back to the previous step instead of to 0 %.
    rollback_to_previous: bool = False
    #: The percentages promotions go along (ascending).
    schedule: tuple[int, ...] = DEFAULT_ROLLOUT_SCHEDULE

    @classmethod
    def from_settings(cls, settings: Settings) -> ControllerPolicy:
        """The policy the ``ROLLOUT_*`` settings name."""
        return cls(
            window_seconds=settings.rollout_window,
            min_samples=settings.rollout_min_samples,
            max_error_rate=settings.rollout_max_error_rate,
            max_error_excess=settings.rollout_max_error_excess,
            max_p99_ratio=settings.rollout_max_p99_ratio,
            bake_seconds=settings.rollout_bake_seconds,
            rollback_to_previous=settings.rollout_rollback_to == "previous",
            schedule=tuple(settings.rollout_schedule),
        )

    def step_above(self, percent: int) -> int | None:
        """The schedule's first step above ``percent`` (None: none is)."""
        return next((p for p in sorted(self.schedule) if p > percent), None)

    def step_below(self, percent: int) -> int:
        """The schedule's last step below ``percent`` (0: none is)."""
        return max((p for p in self.schedule if p < percent), default=0)


@dataclass(frozen=True)
class Decision:
    """What the controller decided, why, and the figures it saw."""

    action: str  # "promote" | "hold" | "rollback"
    reason: str
    snapshot: dict[str, Any]
    target: int | None = None


class RolloutController:
    """Decides from metrics and applies the decision to the flags.

    Args:
        flags: The flags it reads and changes.
        metrics: The lanes' figures.
        policy: Thresholds and schedule (defaults: :class:`ControllerPolicy`'s).
        clock: Unix seconds now (tests control it; the lanes' writers use their own).
    """

    def __init__(
        self,
        flags: FlagStore,
        metrics: LaneMetrics,
        policy: ControllerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.flags = flags
        self.metrics = metrics
        self.policy = policy or ControllerPolicy()
        self.clock = clock

    def window(self, now: float, step_began: float = 0.0) -> tuple[int, int]:
        """The whole seconds ``(first, last)`` a decision at ``now`` looks at.

        The last ``window_seconds`` seconds, the current (partial) one included, and
        none before the second ``step_began`` (Unix seconds) falls in. A request counts
        in second ``int(t)``, ``t`` when it finished (:meth:`LaneMetrics.between`).
        """
        last = int(now)
        return max(last - self.policy.window_seconds + 1, int(step_began)), last

    def snapshot(self, now: float | None = None, step_began: float = 0.0) -> dict[str, Any]:
        """Each lane's figures over :meth:`window`, and the window itself.

        Shape: ``{"window": {"from", "to", "seconds"}, "v3": lane, "v2compat": lane}``,
        ``from``/``to`` Unix seconds (``to`` exclusive), each lane ``{"requests",
        "errors", "error_rate", "samples", "p99_ms"}`` — ``errors`` are server errors,
        ``samples`` the latencies the p99 (ms, None without samples) is taken from.

        Raises:
            redis.RedisError: Redis could not be read.
        """
        first, last = self.window(self.clock() if now is None else now, step_began)
        snap: dict[str, Any] = {
            "window": {"from": first, "to": last + 1, "seconds": max(0, last + 1 - first)}
        }
        for lane in LANES:
            figures = self.metrics.between(lane, first, last)
            requests, errors = figures["requests"], figures["errors"]
            snap[lane] = {
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests if requests else 0.0,
                "samples": figures["samples"],
                "p99_ms": figures["p99_ms"],
            }
        return snap

    def evaluate(self, now: float | None = None) -> Decision:
        """The decision for the flags and metrics as they are now (``now``: Unix
        seconds, by default the controller's clock)."""
        flags = self.flags.read()
        now = self.clock() if now is None else now
        snap = self.snapshot(now, flags.updated_at)
        snap["percent"] = flags.percent
        if flags.finalized:
            return Decision("hold", "finalized: everything goes to V3", snap)
        if flags.forced_lane:
            return Decision("hold", f"kill switch: everything forced to {flags.forced_lane}", snap)
        if flags.percent == 0:
            return Decision("hold", "rollout not started (0 % to V3)", snap)
        problem = self._problem(snap["v3"], snap["v2compat"])
        if problem is not None:
            below = self.policy.step_below(flags.percent)
            return Decision(
                "rollback", problem, snap, below if self.policy.rollback_to_previous else 0
            )
        hold = self._hold(flags, snap["v3"], now)
        target = self.policy.step_above(flags.percent)
        if hold is not None or target is None:  # _hold says why when no step is above
            return Decision("hold", hold or "no step above", snap)
        reason = f"healthy for {now - flags.updated_at:.0f} s: {flags.percent} → {target} %"
        return Decision("promote", reason, snap, target)

    def _problem(self, v3: dict[str, Any], v2: dict[str, Any]) -> str | None:
        """Why V3 must be rolled back, if it must."""
        policy = self.policy
        if v3["requests"] < policy.min_samples:
            return None
        rate = v3["error_rate"]
        baseline = v2["error_rate"] if v2["requests"] >= policy.min_samples else 0.0
        if rate > policy.max_error_rate:
            return f"V3 error rate {rate:.1%} over {policy.max_error_rate:.1%}"
        if rate > baseline + policy.max_error_excess:
            return (
                f"V3 error rate {rate:.1%} over V2-compat's {baseline:.1%} "
                f"by more than {policy.max_error_excess:.1%}"
            )
        if v3["p99_ms"] and v2["p99_ms"] and v3["p99_ms"] > policy.max_p99_ratio * v2["p99_ms"]:
            return (
                f"V3 p99 {v3['p99_ms']:.1f} ms over {policy.max_p99_ratio:g}x "
                f"V2-compat's {v2['p99_ms']:.1f} ms"
            )
        return None

    def _hold(self, flags: RolloutFlags, v3: dict[str, Any], now: float) -> str | None:
        """Why not to promote yet, if there is a reason."""
        baked = now - flags.updated_at
        if flags.paused:
            return "paused (resume to promote again)"
        if flags.percent >= 100:
            return "fully rolled out"
        if self.policy.step_above(flags.percent) is None:
            return f"at the schedule's last step ({flags.percent} %)"
        if baked < self.policy.bake_seconds:
            return f"baking: {baked:.0f} of {self.policy.bake_seconds:.0f} s"
        if v3["requests"] < self.policy.min_samples:
            return (
                f"only {v3['requests']} V3 requests in the window (need {self.policy.min_samples})"
            )
        return None

    def apply(
        self, decision: Decision, *, acting: str | None = None, fence: Fence | None = None
    ) -> RolloutFlags | None:
        """Carry out a decision (holds change nothing); returns the new flags if changed.

        Args:
            decision: From :meth:`evaluate`.
            acting: The acting controller's id, kept in the audit entry's details.
            fence: The acting controller's lease and token (``ControllerLease.fence()``):
                the change applies only if they are still current, checked atomically
                with the write; the token is kept in the audit entry (``fence``).

        Raises:
            StaleFence: ``fence`` is no longer current (another controller took the
                lease): nothing was written.
        """
        details: dict[str, Any] = {"snapshot": decision.snapshot, "action": decision.action}
        if acting is not None:
            details["controller"] = acting
        if fence is not None:
            details["fence"] = fence.token
        target = decision.target
        if decision.action == "rollback" and target is not None:
            log.warning("rolling back: %s", decision.reason)
            return self.flags.update(
                lambda f: replace(f, percent=target, previous_percent=f.percent, paused=True),
                who="controller", why=decision.reason, details=details, fence=fence,
            )  # fmt: skip
        if decision.action == "promote" and target is not None:
            log.info("promoting: %s", decision.reason)
            return self.flags.update(
                lambda f: replace(f, percent=target, previous_percent=f.percent),
                who="controller", why=decision.reason, details=details, fence=fence,
            )  # fmt: skip
        return None

    def run(
        self,
        *,
        interval: float,
        stop: threading.Event,
        lease: ControllerLease | None = None,
        announce: Callable[[str], None] = log.info,
    ) -> None:
        """Evaluate and apply every ``interval`` seconds until ``stop`` is set.

        With a ``lease``, act only while holding it: renew it (or try to take it) every
        ``min(interval, ttl / 3)`` seconds, stand by while another controller holds it,
        and give it up on the way out so a standby takes over at once. Every change is
        fenced by the lease's token: a decision refused as stale (this controller paused
        past its lease and another took over) is logged, and the controller stands by.
        ``announce`` is told each change of role (acting / standby).
        """
        tick = min(interval, lease.ttl / 3) if lease is not None else interval
        due = time.monotonic()
        role: str | None = None
        try:
            while not stop.is_set():
                try:
                    holding = lease.acquire() if lease is not None else True
                    now_role = "acting" if holding else "standby"
                    if now_role != role:
                        role = now_role
                        announce(self._role_message(role, lease))
                        due = time.monotonic()  # a new acting controller decides at once
                    if holding and time.monotonic() >= due:
                        due = time.monotonic() + interval
                        decision = self.evaluate()
                        if lease is None:
                            self.apply(decision)
                        else:
                            self.apply(decision, acting=lease.holder, fence=lease.fence())
                        log.info("%s: %s", decision.action, decision.reason)
                except StaleFence as exc:
                    assert lease is not None  # only a fenced change is refused
                    lease.lost()
                    role = None  # the next try says standby (or acting, with a new token)
                    log.warning("decision refused, nothing written: %s", exc)
                    announce(f"refused: {exc}; nothing written, standing by")
                except Exception:
                    log.exception("controller cycle failed; trying again next interval")
                stop.wait(tick)
        finally:
            if lease is not None:
                try:
                    lease.release()
                except Exception:
                    log.exception("could not give the controller lease up (it will expire)")

    @staticmethod
    def _role_message(role: str, lease: ControllerLease | None) -> str:
        if lease is None:
            return "acting (no lease: make sure no other controller runs)"
        if role == "acting":
            return f"acting: controller {lease.holder} holds the lease"
        holder = lease.current() or "another controller"
        return (
            f"standby: controller {holder} is acting; this one ({lease.holder}) takes over "
            f"when it stops, or {lease.ttl:g} s after it dies"
        )
