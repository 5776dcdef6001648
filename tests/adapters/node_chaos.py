"""The adapter of the node-death tests: the built-ins and DSPy programs (imported in the
template, as a DSPy deployment runs: a rebuilt program does not wait for DSPy's import),
the chaos adapter's ``kill_node`` (needs ``SNAKEPOOL_ENABLE_CHAOS=1``), and ``note``."""

import os
import time
from pathlib import Path
from typing import Any

from snakepool.pool.interpreter import command
from snakepool.pool.interpreter.builtin import *  # noqa: F403 - re-export every command
from snakepool.pool.interpreter.chaos import kill_node, node_pid
from snakepool.pool.interpreter.dspy_programs import *  # noqa: F403

__all__ = ["kill_node", "note"]


@command()
def note(args: dict[str, Any]) -> dict[str, Any]:
    """Append ``"<node pid>\\n"`` to ``<dir>/<key>`` (one line per run: duplicates show),
    sleep ``seconds``, then return ``{"key", "node"}``."""
    key = str(args["key"])
    node = node_pid()
    with (Path(str(args["dir"])) / key).open("a") as runs:
        runs.write(f"{node}\n")
        runs.flush()
        os.fsync(runs.fileno())
    time.sleep(float(args.get("seconds", 0)))
    return {"key": key, "node": node}
