"""Rehearsing an interpreter's start in a throwaway fork
(:mod:`~snakepool.pool.interpreter.rehearsal`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import psutil
import pytest

from snakepool.pool.interpreter import rehearsal, wire

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")


def _marker() -> int:
    return 1


def _never_run() -> int:
    return 2


def _serve_one(fds: list[int], limit: int) -> int:
    """A stand-in for the template's start: read the request stream to EOF, answer."""
    req_r, resp_w, _out_w, _err_w = fds
    data = b""
    while chunk := os.read(req_r, 4096):
        data += chunk
    (size,) = wire.HEADER.unpack_from(data)
    _, command, _, _, _ = wire.decode_request(data[wire.HEADER.size : wire.HEADER.size + size])
    assert command == "ping" and limit > 0
    os.write(resp_w, b"pong")
    return _marker() - 1


@pytest.fixture(autouse=True)
def _no_rehearsal_left() -> Iterator[None]:
    """Whatever the outcome, the throwaway child is gone (reaped) when it returns."""
    before = {p.pid for p in psutil.Process().children()}
    yield
    assert {p.pid for p in psutil.Process().children()} <= before


@pytest.mark.timeout(30)
def test_the_code_a_start_ran_comes_back_as_this_process_holds_it() -> None:
    codes = rehearsal.start_code(_serve_one)
    held = {id(code) for code in codes}
    assert id(_serve_one.__code__) in held and id(_marker.__code__) in held
    assert id(_never_run.__code__) not in held
    # An after-fork hook runs inside the fork, under the profiler set across it.
    assert id(threading._after_fork.__code__) in held  # type: ignore[attr-defined]
    assert all(isinstance(code, CodeType) for code in codes)


@pytest.mark.timeout(30)
def test_a_rehearsal_that_hangs_is_killed_and_gives_nothing() -> None:
    def hang(fds: list[int], limit: int) -> int:
        time.sleep(60)
        return 0

    started = time.monotonic()
    assert rehearsal.start_code(hang, timeout=1.0) == []
    assert time.monotonic() - started < 1.9  # one budget for reading and reaping, not two


@pytest.mark.timeout(30)
def test_a_rehearsal_that_fails_gives_nothing() -> None:
    def fail(fds: list[int], limit: int) -> int:
        raise RuntimeError("the start broke")

    assert rehearsal.start_code(fail) == []


@pytest.mark.timeout(30)
def test_under_a_profiler_nothing_is_rehearsed_and_the_profiler_stays() -> None:
    events: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        events.append(event)

    sys.setprofile(profile)
    try:
        assert rehearsal.start_code(_serve_one) == []
        assert sys.getprofile() is profile
    finally:
        sys.setprofile(None)


@pytest.mark.timeout(30)
def test_the_profiler_is_off_again_after_a_rehearsal() -> None:
    rehearsal.start_code(_serve_one)
    assert sys.getprofile() is None


def _leader_starting(what: str, pid_file: Path) -> rehearsal.Become:
    """A start that leads its own group, as every interpreter does, and leaves a
    process behind: ``exec`` (a command) or ``fork`` (a copy holding every pipe)."""

    def become(fds: list[int], limit: int) -> int:
        os.setsid()
        if what == "exec":
            pid = subprocess.Popen(["sleep", "60"]).pid
        else:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the grandchild
                time.sleep(60)
                os._exit(0)
        pid_file.write_text(str(pid))
        return _serve_one(fds, limit)

    return become


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(30)
@pytest.mark.parametrize("what", ["exec", "fork"])
def test_what_a_rehearsal_started_is_killed_with_it(what: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "left"
    started = time.monotonic()
    codes = rehearsal.start_code(_leader_starting(what, pid_file), timeout=10)
    # A copy holding the ids' pipe open no longer makes it wait for EOF: sent counted.
    assert codes and time.monotonic() - started < 5
    left = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(left) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(left)
