import logging
from collections import deque

import pytest

from snakepool.pool.intensity import RestartIntensity
from snakepool.pool.output import MAX_LOG_LINE, OutputLog


def test_intensity_allows_r_restarts_in_t_then_backs_off_exponentially() -> None:
    intensity = RestartIntensity(intensity=3, period=10.0)
    assert [intensity.record(t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert intensity.record(3.0) == 0.5
    assert intensity.record(3.1) == 1.0
    assert intensity.record(3.2) == 2.0
    # A whole calm window later the back-off starts over.
    assert intensity.record(100.0) is None and len(intensity) == 1


def test_output_log_splits_lines_across_reads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="snakepool.interpreter")
    output, recent = OutputLog(), deque(maxlen=5)
    output.feed(7, b"hel", stream="stdout", label="interpreter 1 (pid 9)", recent=recent)
    output.feed(7, b"lo\nwor", stream="stdout", label="interpreter 1 (pid 9)", recent=recent)
    output.feed(7, b"ld", stream="stdout", label="interpreter 1 (pid 9)", recent=recent,
                final=True)  # fmt: skip
    output.feed(8, b"oops\n", stream="stderr", label="interpreter 1 (pid 9)")
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.INFO, "[interpreter 1 (pid 9) stdout] hello"),
        (logging.INFO, "[interpreter 1 (pid 9) stdout] world"),
        (logging.WARNING, "[interpreter 1 (pid 9) stderr] oops"),
    ]
    assert list(recent) == ["hello", "world"]


def test_output_log_cuts_endless_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="snakepool.interpreter")
    OutputLog().feed(3, b"x" * (MAX_LOG_LINE * 3), stream="stdout", label="t")
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().endswith("x" * 10)
