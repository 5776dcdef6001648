"""The adapter the distributed tests run: DSPy programs + built-ins + one failing command."""

from typing import Any

from snakepool.pool.interpreter import command
from snakepool.pool.interpreter.dspy_programs import *  # noqa: F403 - re-export every command


@command()
def fail(args: dict[str, Any]) -> None:
    """Raise inside the interpreter (CommandFailed with a remote traceback)."""
    raise ValueError(str(args.get("message", "it failed")))


def _crash_first_time(marker: str) -> dict[str, int]:
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)  # the first attempt dies mid-request
    return {"pid": os.getpid()}


@command(idempotent=True)
def flaky_idempotent(args: dict[str, Any]) -> dict[str, int]:
    """Kills its interpreter the first time for a marker path, then succeeds."""
    return _crash_first_time(str(args["marker"]))


@command()
def flaky_unsafe(args: dict[str, Any]) -> dict[str, int]:
    """The same, but not idempotent: never retried."""
    return _crash_first_time(str(args["marker"]))
