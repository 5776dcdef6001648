"""What a new interpreter sets up right after the fork (:func:`server.prepare_child`)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

import pytest

from snakepool.pool.interpreter.server import prepare_child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

_PR_GET_PDEATHSIG = 2


def _in_a_child() -> dict[str, object]:
    """Fork; the child runs prepare_child and reports what it then has."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            prepare_child()
            libc = ctypes.CDLL(None, use_errno=True)
            death = ctypes.c_int(-1)
            libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(death), 0, 0, 0)
            report = {
                "sigint": int(signal.getsignal(signal.SIGINT)),  # type: ignore[arg-type]
                "sigterm": int(signal.getsignal(signal.SIGTERM)),  # type: ignore[arg-type]
                "sigchld": int(signal.getsignal(signal.SIGCHLD)),  # type: ignore[arg-type]
                "pdeathsig": death.value,
                "leader": os.getpgid(0) == os.getpid() == os.getsid(0),
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            data = reader.read()
    finally:
        os.waitpid(pid, 0)
    return dict(json.loads(data))


def test_a_new_interpreter_ignores_ctrl_c_leads_its_group_and_dies_with_its_parent() -> None:
    # As in the template: a Python handler for SIGCHLD and SIGTERM, SIGINT default.
    previous = {
        signum: signal.signal(signum, lambda *_: None)
        for signum in (signal.SIGCHLD, signal.SIGTERM)
    }
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        report = _in_a_child()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert report == {
        "sigint": int(signal.SIG_IGN),
        "sigterm": int(signal.SIG_DFL),
        "sigchld": int(signal.SIG_DFL),
        "pdeathsig": int(signal.SIGKILL),
        "leader": True,
    }


def test_handlers_are_set_without_the_enum_wrapper() -> None:
    # signal.signal turns the old handler into an enum: the enum machinery, run in every
    # new interpreter, copies its pages. The C function underneath takes plain ints.
    from snakepool.pool.interpreter import server

    assert type(server._set_handler).__name__ == "builtin_function_or_method"
    assert server._set_handler is not signal.signal
