"""The controller judges the window it is documented to judge (fakeredis, clock held).

Every figure a decision rests on — requests, server errors, latency samples, p99 — covers
the same whole seconds: the last ``window_seconds`` (the current one included), none
before the second the current step began. Samples outside it, however many, never
decide anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config.flags import FlagStore
from snakepool.tasks.rollout import metrics as metrics_module
from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
from snakepool.tasks.rollout.metrics import LaneMetrics

pytestmark = pytest.mark.timeout(120)


class Clock:
    """The writers' and the controller's clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(policy: ControllerPolicy) -> tuple[RolloutController, FlagStore, LaneMetrics, Clock]:
    client = fakeredis.FakeRedis()
    clock = Clock(time.time())
    flags = FlagStore(client, prefix="w:")
    metrics = LaneMetrics(client, prefix="w:", clock=clock)
    return RolloutController(flags, metrics, policy, clock=clock), flags, metrics, clock


def record(metrics: LaneMetrics, clock: Clock, lane: str, at: float, ms: float, n: int) -> None:
    """``n`` requests of ``ms`` each on ``lane``, finished at ``at`` (Unix seconds)."""
    clock.now = at
    for _ in range(n):
        metrics.record(lane, ms / 1000, None)


def step_began(flags: FlagStore, at: float, percent: int = 10) -> None:
    """The rollout set to ``percent`` at ``at`` (what ``FlagStore.update`` stamps)."""
    flags.set_percent(percent, who="ops", why="step")
    aged = replace(flags.read(), updated_at=at)
    flags.client.set(flags.keys.rollout, json.dumps(aged.to_dict()))


POLICY = ControllerPolicy(window_seconds=60, min_samples=20, bake_seconds=0, schedule=(10, 25))


def test_old_slow_samples_outside_the_window_do_not_roll_a_healthy_step_back() -> None:
    controller, flags, metrics, clock = setup(POLICY)
    now = clock.now
    step_began(flags, now - 7200)  # the step has run for two hours
    record(metrics, clock, "v3", now - 3600, 900.0, 300)  # an hour ago, on a quiet lane
    record(metrics, clock, "v3", now - 20, 5.0, 40)  # now: healthy
    record(metrics, clock, "v2compat", now - 20, 5.0, 40)
    decision = controller.evaluate(now)
    assert decision.action == "promote", decision.reason
    v3 = decision.snapshot["v3"]
    assert (v3["requests"], v3["samples"], v3["p99_ms"]) == (40, 40, 5.0)
    assert metrics.summary("v3")["p99_ms"] == 900.0  # `status`: the newest 1000, any age


def test_slow_samples_from_before_the_step_do_not_roll_it_back() -> None:
    """A step re-set 10 s after a rollback: the slow traffic that caused it is in the
    last 60 s, but not in this step."""
    controller, flags, metrics, clock = setup(POLICY)
    now = clock.now
    record(metrics, clock, "v3", now - 40, 900.0, 50)
    record(metrics, clock, "v2compat", now - 40, 5.0, 50)
    step_began(flags, now - 10)
    record(metrics, clock, "v3", now - 5, 5.0, 30)
    record(metrics, clock, "v2compat", now - 5, 5.0, 30)
    decision = controller.evaluate(now)
    assert decision.action == "promote", decision.reason
    assert decision.snapshot["window"] == {"from": int(now - 10), "to": int(now) + 1,
                                           "seconds": 11}  # fmt: skip
    assert decision.snapshot["v3"]["p99_ms"] == 5.0


def test_a_slow_new_step_rolls_back_though_older_fast_samples_outnumber_it() -> None:
    controller, flags, metrics, clock = setup(replace(POLICY, min_samples=5))
    now = clock.now
    step_began(flags, now - 7200)
    record(metrics, clock, "v3", now - 3600, 5.0, 2000)  # the lane was fast an hour ago
    record(metrics, clock, "v3", now - 10, 400.0, 8)  # quiet, and slow now
    record(metrics, clock, "v2compat", now - 10, 5.0, 50)
    decision = controller.evaluate(now)
    assert decision.action == "rollback", decision.reason
    assert "p99 400.0 ms" in decision.reason
    assert decision.snapshot["v3"] | {"error_rate": 0.0} == {
        "requests": 8, "errors": 0, "error_rate": 0.0, "samples": 8, "p99_ms": 400.0
    }  # fmt: skip


def test_errors_and_minimum_samples_count_the_window_only() -> None:
    controller, flags, metrics, clock = setup(POLICY)
    now = clock.now
    step_began(flags, now - 7200)
    clock.now = now - 600
    for _ in range(100):  # ten minutes ago: all failing
        metrics.record("v3", 0.005, RuntimeError("old"))
    record(metrics, clock, "v3", now - 1, 5.0, 10)
    decision = controller.evaluate(now)
    assert decision.action == "hold" and "only 10 V3 requests" in decision.reason
    assert decision.snapshot["v3"]["errors"] == 0


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=900, allow_nan=False),  # seconds ago
            st.integers(min_value=1, max_value=10**7),  # latency in µs
        ),
        max_size=60,
    ),
    window=st.integers(min_value=1, max_value=600),
    step_age=st.floats(min_value=0, max_value=1200, allow_nan=False),
    now=st.floats(min_value=1.7e9, max_value=1.8e9, allow_nan=False),
)
def test_the_p99_judged_is_that_of_exactly_the_samples_in_the_window(
    samples: list[tuple[float, int]], window: int, step_age: float, now: float
) -> None:
    client = fakeredis.FakeRedis()
    clock = Clock(now)
    metrics = LaneMetrics(client, prefix="p:", clock=clock)
    controller = RolloutController(
        FlagStore(client, prefix="p:"), metrics, ControllerPolicy(window_seconds=window),
        clock=clock,
    )  # fmt: skip
    recorded = []
    for ago, micros in samples:
        clock.now = now - ago
        metrics.record("v3", micros / 1e6, None)
        recorded.append((clock.now, round(micros / 1e3, 3)))
    step = now - step_age
    first = max(int(now) - window + 1, int(step))  # whole seconds; none before the step's
    inside = sorted(ms for at, ms in recorded if first <= int(at) <= int(now))
    v3 = controller.snapshot(now, step)["v3"]
    assert v3["requests"] == v3["samples"] == len(inside)
    expected = inside[round(0.99 * (len(inside) - 1))] if inside else None
    assert v3["p99_ms"] == expected


def test_a_window_past_the_cap_judges_its_newest_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "LATENCY_CAP", 10)
    controller, flags, metrics, clock = setup(POLICY)
    now = clock.now
    record(metrics, clock, "v3", now - 30, 900.0, 5)
    record(metrics, clock, "v3", now - 2, 5.0, 10)
    assert flags.client.zcard("w:latencies:v3") == 10  # capped on write
    v3 = controller.snapshot(now)["v3"]
    assert (v3["requests"], v3["samples"], v3["p99_ms"]) == (15, 10, 5.0)
