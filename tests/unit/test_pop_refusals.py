"""Refusals: a list Redis refused to pop from rests, and is warned about once a minute."""

from __future__ import annotations

import logging
import sys

import pytest
import redis

from snakepool.tasks.worker import pop_wait
from snakepool.tasks.worker.logs import RETRY_LOG_EVERY, RetryLines
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
        assert [r.getMessage().split(" (")[1].split(",")[0] for r in caplog.records] == [
            "v3",
            "router",
        ]
        clock.now += REFUSED_LOG_EVERY
        refusals.refused("v3", error)
    assert len(caplog.records) == 3 and "WRONGTYPE" in caplog.records[-1].getMessage()


def test_celerys_retry_lines_are_one_line_every_ten_seconds() -> None:
    lines = RetryLines()
    try:
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 100%")
    except redis.exceptions.OutOfMemoryError:
        exc_info = sys.exc_info()

    def retry(at: float) -> logging.LogRecord:
        record = logging.LogRecord("celery.backends.base", logging.WARNING, __file__, 1,
                                   "Failed operation %s. Retrying %s more times.",
                                   ("_store_result", 7), exc_info)  # fmt: skip
        record.created = at
        return record

    first = retry(100.0)
    assert lines.filter(first) and first.exc_info is None
    assert first.getMessage() == (
        "Failed operation _store_result. Retrying 7 more times. (OutOfMemoryError: command "
        "not allowed when used memory > 100%; 0 like it left out)"
    )
    assert not any(lines.filter(retry(100.0 + n)) for n in range(1, 10))
    again = retry(100.0 + RETRY_LOG_EVERY)
    assert lines.filter(again) and again.getMessage().endswith("9 like it left out)")
    other = logging.LogRecord("celery.backends.base", logging.ERROR, __file__, 1, "x", (), None)
    assert lines.filter(other) and other.getMessage() == "x"
