"""The adapter the observability tests run: the built-ins plus a failure and a crash."""

from typing import Any

from snakepool.pool.interpreter import command
from snakepool.pool.interpreter.builtin import *  # noqa: F403 - re-export every built-in


@command()
def fail(args: dict[str, Any]) -> None:
    """Raise inside the interpreter (a server error: CommandFailed)."""
    raise ValueError("it failed")


@command()
def crash(args: dict[str, Any]) -> None:
    """Kill the interpreter mid-request (a server error: WorkerCrashed; not retried)."""
    import os

    os._exit(9)
