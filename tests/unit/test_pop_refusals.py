"""Refusals: a list Redis refused to pop from rests, and is warned about once a minute."""

from __future__ import annotations

import logging

import pytest
import redis

from snakepool.tasks.worker import pop_wait
from snakepool.tasks.worker.pop_wait import REFUSED_LOG_EVERY, REFUSED_REST, Refusals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(pop_wait, "monotonic", clock)
    return clock


def test_a_refused_list_rests_then_is_tried_again(clock: Clock) -> None:
    refusals = Refusals()
    assert not refusals.resting("v3")
    refusals.refused("v3", redis.exceptions.OutOfMemoryError("OOM"))
    assert refusals.resting("v3") and not refusals.resting("router")
    clock.now += REFUSED_REST * 0.99
    assert refusals.resting("v3")
    clock.now += REFUSED_REST * 0.02
    assert not refusals.resting("v3") and not refusals.resting("v3")


def test_one_warning_per_list_per_minute(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals()
    error = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    with caplog.at_level(logging.WARNING, logger="snakepool.broker"):
        for _ in range(30):  # a refusal every rest for half a minute
            refusals.refused("v3", error)
            clock.now += REFUSED_REST
        refusals.refused("router", error)
        assert [r.getMessage().split(" (")[1].split(":")[0] for r in caplog.records] == [
            "v3",
            "router",
        ]
        clock.now += REFUSED_LOG_EVERY
        refusals.refused("v3", error)
    assert len(caplog.records) == 3 and "WRONGTYPE" in caplog.records[-1].getMessage()
