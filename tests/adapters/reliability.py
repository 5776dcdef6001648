"""The adapter the chaos tests run: the built-ins plus ``tick``, which logs every start.

Each start of a request appends ``<id> <pid>`` to the file named by ``log`` (one
``O_APPEND`` write: lines from concurrent interpreters never interleave), so a test can
count the runs of every request id — a duplicate is an id that started twice.
"""

import os
import time
from typing import Any

from snakepool.pool.interpreter import command
from snakepool.pool.interpreter.builtin import *  # noqa: F403 - re-export every built-in


def _started(args: dict[str, Any]) -> None:
    log = args.get("log")
    if log:
        fd = os.open(str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{args['id']} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _tick(args: dict[str, Any]) -> dict[str, Any]:
    _started(args)
    seconds = float(args.get("seconds", 0))
    started = time.monotonic()
    time.sleep(seconds)
    return {"id": args["id"], "slept": round(time.monotonic() - started, 3)}


@command(idempotent=True)
def tick(args: dict[str, Any]) -> dict[str, Any]:
    """Log the start, sleep ``seconds``; idempotent: the lanes retry it."""
    return _tick(args)


@command(idempotent=False)
def tick_once(args: dict[str, Any]) -> dict[str, Any]:
    """The same, not idempotent: a crash under it is the caller's ``WorkerCrashed``."""
    return _tick(args)
