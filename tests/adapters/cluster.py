"""The adapter the distributed tests run: DSPy programs + built-ins + one failing command."""

from typing import Any

from pool.interpreter import command
from pool.interpreter.dspy_programs import *  # noqa: F403 - re-export every command


@command()
def fail(args: dict[str, Any]) -> None:
    """Raise inside the interpreter (CommandFailed with a remote traceback)."""
    raise ValueError(str(args.get("message", "it failed")))
