"""Running snakepool on one machine: the process launcher (``snakepool up``) and the demos.

- :mod:`~snakepool.tasks.local.launcher` — :class:`Launcher`: nodes, Flower and a Redis
  as child processes, stopped in order;
- :mod:`~snakepool.tasks.local.pool_demo` and :mod:`~snakepool.tasks.local.system_demo` —
  the two halves of ``snakepool demo``.

Names here are loaded on first use (the system demo pulls in Celery).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.local.launcher import Launcher, child_env, free_port
    from snakepool.tasks.local.pool_demo import run_pool_demo
    from snakepool.tasks.local.system_demo import run_system_demo

__all__ = ["Launcher", "child_env", "free_port", "run_pool_demo", "run_system_demo"]

_HOMES = {
    "Launcher": "launcher",
    "child_env": "launcher",
    "free_port": "launcher",
    "run_pool_demo": "pool_demo",
    "run_system_demo": "system_demo",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
