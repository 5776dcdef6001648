"""What every chaos run shares: its scale, its load, its bookkeeping and its report.

A request is **lost** when its AsyncResult never resolves (DESIGN.md §8). Each run
counts what it submitted, what was refused at submission (a typed error, nothing
accepted), what succeeded, what failed by error type, what was lost, how many request
ids started more than once (from the ``tick`` start log) and a recovery time, prints
it, and — for full runs (``SNAKEPOOL_CHAOS_SCALE=full``, ``make chaos``) — writes it to
``docs/RELIABILITY.md`` with the command that produced it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult

from snakepool.errors import SnakepoolError

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY = ROOT / "docs" / "RELIABILITY.md"
SCALE_ENV = "SNAKEPOOL_CHAOS_SCALE"
#: The adapter every chaos node runs (built-ins + ``tick``).
ADAPTER = "tests.adapters.reliability"

T = TypeVar("T")
#: Untyped errors are logged with their stack (pytest shows it with a failed test).
log = logging.getLogger("snakepool.chaos")


def scale() -> str:
    """``short`` (the default: what ``make test`` runs) or ``full`` (``make chaos``)."""
    value = os.environ.get(SCALE_ENV, "short")
    if not re.fullmatch(r"short|full", value):
        raise ValueError(f"{SCALE_ENV} must be 'short' or 'full', not {value!r}")
    return value


FULL = scale() == "full"


def pick(short: T, full: T) -> T:
    """``short`` in the default run, ``full`` under ``SNAKEPOOL_CHAOS_SCALE=full``."""
    return full if FULL else short


@dataclass
class Sent:
    """One request of a run and what became of it."""

    id: str
    command: str
    via: str
    #: Seconds since the run started.
    at: float
    result: AsyncResult | None = None
    #: The error type when the submission itself raised (nothing was accepted).
    refused: str | None = None
    value: Any = None
    #: The error type the request ended with (``untyped <name>`` if not ours).
    error: str | None = None
    lost: bool = False
    lane: str | None = None
    #: Seconds the submission took (a refusal must come quickly, not hang).
    took: float = 0.0

    @property
    def settled(self) -> bool:
        """Whether its outcome is known (a value, an error, or lost)."""
        return self.lost or self.error is not None or self.value is not None


class Run:
    """The bookkeeping of one chaos run.

    Args:
        name: The scenario (a section of docs/RELIABILITY.md).
        log: The ``tick`` start log of this run.
    """

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def tick_args(self, seconds: float = 0.0) -> dict[str, Any]:
        """Arguments of a ``tick`` that logs its start in this run's log."""
        return {"id": uuid.uuid4().hex, "seconds": seconds, "log": str(self.log)}

    def submit(self, via: str, command: str, args: dict[str, Any], send: Callable[[], Any]) -> Sent:
        """Record one request; ``send()`` returns its AsyncResult, or raises (refused)."""
        sent = Sent(str(args.get("id", uuid.uuid4().hex)), command, via, self.now())
        try:
            sent.result = send()
            # Wait for it as a caller in ``get`` does: a result message read by
            # :meth:`watching` then lands on this AsyncResult (not only in Redis, which a
            # restart without persistence may wipe before anyone asks).
            sent.result.backend.add_pending_result(sent.result)
        except SnakepoolError as exc:
            sent.refused = type(exc).__name__
        except Exception as exc:  # an untyped refusal is a finding: reported as such
            sent.refused = f"untyped {type(exc).__name__}: {exc}"[:120]
            log.error("untyped refusal of %s", sent.id, exc_info=True)  # its stack: where
        sent.took = self.now() - sent.at
        with self._lock:
            self.sent.append(sent)
        return sent

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Read result messages as they come (as callers waiting in ``execute`` would),
        from a thread, for as long as the block runs; :meth:`resolve` then finds them.

        Celery's ``app.backend`` is per thread: the backends drained are those of the
        results themselves (the thread that sent them), not this thread's.
        """
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                with self._lock:
                    backends = {id(s.result.backend): s.result.backend
                                for s in self.sent if s.result is not None}  # fmt: skip
                if not backends:
                    stop.wait(0.05)
                for backend in backends.values():
                    with contextlib.suppress(Exception):  # Redis away: try again
                        backend.result_consumer.drain_events(timeout=0.05)

        thread = threading.Thread(target=drain, name="chaos-results", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    def resolve(self, timeout: float) -> None:
        """Wait for every accepted request (``timeout`` seconds in all, all of them at
        once: one cheap ``ready()`` each per round); the rest are lost."""
        deadline = time.monotonic() + timeout
        pending = [s for s in self.sent if s.result is not None and not s.settled]
        while pending and time.monotonic() < deadline:
            waiting = []
            for sent in pending:
                try:
                    ready = sent.result is not None and sent.result.ready()
                except Exception:  # Redis away: ask again next round
                    ready = False
                if ready:
                    self._settle(sent)
                else:
                    waiting.append(sent)
            pending = waiting
            if pending:
                time.sleep(0.1)
        for sent in pending:
            sent.lost = True

    @staticmethod
    def _settle(sent: Sent) -> None:
        assert sent.result is not None
        try:
            sent.value = sent.result.get(timeout=10, interval=0.05)
            sent.lane = sent.result.queue
        except ResultTimeout:
            sent.lost = True
        except SnakepoolError as exc:
            sent.error = type(exc).__name__
        except Exception as exc:
            sent.error = f"untyped {type(exc).__name__}"
            log.error("untyped outcome of %s", sent.id, exc_info=True)  # its stack: where

    def starts(self) -> Counter[str]:
        """Request id → times it started (from the ``tick`` log)."""
        if not self.log.exists():
            return Counter()
        return Counter(line.split()[0] for line in self.log.read_text().splitlines() if line)

    def report(self, **details: Any) -> Report:
        """The figures of the run so far (``details``: scenario-specific figures)."""
        accepted = [s for s in self.sent if s.result is not None]
        refusals = [s.took for s in self.sent if s.refused]
        if refusals:
            details = {"slowest_refusal_s": max(refusals), **details}
        return Report(
            name=self.name,
            scale=scale(),
            submitted=len(self.sent),
            accepted=len(accepted),
            refused=dict(Counter(s.refused for s in self.sent if s.refused)),
            succeeded=sum(1 for s in accepted if not s.lost and s.error is None),
            failed=dict(Counter(s.error for s in accepted if s.error)),
            lost=sum(1 for s in accepted if s.lost),
            duplicates=sum(1 for n in self.starts().values() if n > 1),
            seconds=round(self.now(), 1),
            details=details,
        )


@dataclass
class Report:
    """The figures every run reports."""

    name: str
    scale: str
    submitted: int
    accepted: int
    refused: dict[str, int]
    succeeded: int
    failed: dict[str, int]
    lost: int
    duplicates: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs, in the order they are shown."""
        rows = [
            ("submitted", str(self.submitted)),
            ("accepted", str(self.accepted)),
            ("refused at submission (typed)", _counts(self.refused)),
            ("succeeded", str(self.succeeded)),
            ("failed, by error type", _counts(self.failed)),
            ("lost (never resolved)", str(self.lost)),
            ("duplicates run (ids started twice)", str(self.duplicates)),
        ]
        rows += [(name.replace("_", " "), _value(value)) for name, value in self.details.items()]
        rows.append(("run time", f"{self.seconds} s"))
        return rows

    def text(self) -> str:
        """A plain-text block for the test output."""
        width = max(len(name) for name, _ in self.rows())
        lines = [f"== chaos: {self.name} ({self.scale}) =="]
        lines += [f"  {name:<{width}}  {value}" for name, value in self.rows()]
        return "\n".join(lines)

    def markdown(self, command: str) -> str:
        """The section of docs/RELIABILITY.md for this scenario."""
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"### {self.name}", "", f"`{command}` — {when}, {os.cpu_count()} CPUs", ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "0"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def publish(report: Report, test_file: str) -> None:
    """Print the report; for a full run, also write it to docs/RELIABILITY.md."""
    print("\n" + report.text(), file=sys.stderr)
    if report.scale != "full":
        return
    command = f"{SCALE_ENV}=full python -m pytest -m chaos {Path(test_file).relative_to(ROOT)}"
    section = report.markdown(command)
    begin, end = f"<!-- chaos:{report.name} -->", f"<!-- /chaos:{report.name} -->"
    text = RELIABILITY.read_text() if RELIABILITY.exists() else ""
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RELIABILITY.write_text(text)


class Load:
    """Calls ``send(i)`` ``rate`` times a second from a thread until :meth:`stop`.

    A ``send`` that blocks (Redis is down) delays the next ones; nothing is skipped.
    """

    def __init__(self, send: Callable[[int], object], rate: float) -> None:
        self.send = send
        self.interval = 1.0 / rate
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-load", daemon=True)

    def start(self) -> Load:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending (returns once the last send has returned)."""
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.send(self.count)
            self.count += 1
            due += self.interval


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` (every 50 ms: its state is in Redis or a file, nothing to wait
    on) until true; returns the seconds it took.

    Raises:
        AssertionError: not true within ``timeout`` seconds (``what`` says what).
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started
