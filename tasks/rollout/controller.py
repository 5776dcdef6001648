"""The rollout controller: promote, hold or roll back, from the lanes' own figures.

Every ``interval`` seconds it reads each lane's windowed request and error counts (client
errors excluded: a bad request is not V3's fault) and recent p99, then:

- **rolls back** (to 0 %, or to the previous step) when V3 has enough samples and its
  error rate is over the limit or over V2-compat's by a margin, or its p99 is a multiple
  of V2-compat's — and pauses, so a person looks before it moves again;
- **promotes** to the next step of the schedule when the current step has baked long
  enough with enough V3 samples and nothing is wrong;
- otherwise **holds**, and says why.

Every change it makes goes to the audit trail with the metric snapshot behind it. It
never starts a rollout: 0 % stays 0 % until someone sets a first step.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from snakepool.config.flags import FlagStore, RolloutFlags, next_step
from snakepool.tasks.rollout.metrics import LaneMetrics

__all__ = ["ControllerPolicy", "Decision", "RolloutController"]

log = logging.getLogger("snakepool.controller")


@dataclass(frozen=True)
class ControllerPolicy:
    """Thresholds; the defaults are conservative."""

    #: Seconds of lane metrics each decision looks at.
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


@dataclass(frozen=True)
class Decision:
    """What the controller decided, why, and the figures it saw."""

    action: str  # "promote" | "hold" | "rollback"
    reason: str
    snapshot: dict[str, Any]
    target: int | None = None


class RolloutController:
    """Decides from metrics and applies the decision to the flags."""

    def __init__(
        self, flags: FlagStore, metrics: LaneMetrics, policy: ControllerPolicy | None = None
    ) -> None:
        self.flags = flags
        self.metrics = metrics
        self.policy = policy or ControllerPolicy()

    def snapshot(self) -> dict[str, Any]:
        """Each lane's windowed counts, error rate and p99."""
        lanes = {}
        for lane in ("v3", "v2compat"):
            window = self.metrics.window(lane, self.policy.window_seconds)
            requests, errors = window["requests"], window["errors"]
            lanes[lane] = {
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests if requests else 0.0,
                "p99_ms": self.metrics.summary(lane)["p99_ms"],
            }
        return lanes

    def evaluate(self, now: float | None = None) -> Decision:
        """The decision for the flags and metrics as they are now."""
        flags = self.flags.read()
        now = time.time() if now is None else now
        snap = self.snapshot()
        snap["percent"] = flags.percent
        if flags.finalized:
            return Decision("hold", "finalized: everything goes to V3", snap)
        if flags.forced_lane:
            return Decision("hold", f"kill switch: everything forced to {flags.forced_lane}", snap)
        if flags.percent == 0:
            return Decision("hold", "rollout not started (0 % to V3)", snap)
        problem = self._problem(snap["v3"], snap["v2compat"])
        if problem is not None:
            below = max((p for p in flags.schedule if p < flags.percent), default=0)
            return Decision(
                "rollback", problem, snap, below if self.policy.rollback_to_previous else 0
            )
        hold = self._hold(flags, snap["v3"], now)
        if hold is not None:
            return Decision("hold", hold, snap)
        target = next_step(flags)
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
        if baked < self.policy.bake_seconds:
            return f"baking: {baked:.0f} of {self.policy.bake_seconds:.0f} s"
        if v3["requests"] < self.policy.min_samples:
            return (
                f"only {v3['requests']} V3 requests in the window (need {self.policy.min_samples})"
            )
        return None

    def apply(self, decision: Decision) -> RolloutFlags | None:
        """Carry out a decision (holds change nothing); returns the new flags if changed."""
        details = {"snapshot": decision.snapshot, "action": decision.action}
        if decision.action == "rollback":
            log.warning("rolling back: %s", decision.reason)
            return self.flags.rollback(
                who="controller", why=decision.reason, details=details,
                to_previous=self.policy.rollback_to_previous,
            )  # fmt: skip
        if decision.action == "promote":
            log.info("promoting: %s", decision.reason)
            return self.flags.step(who="controller", why=decision.reason, details=details)
        return None

    def run(self, *, interval: float, stop: threading.Event) -> None:
        """Evaluate and apply every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                decision = self.evaluate()
                self.apply(decision)
                log.info("%s: %s", decision.action, decision.reason)
            except Exception:
                log.exception("controller cycle failed; trying again next interval")
            stop.wait(interval)
