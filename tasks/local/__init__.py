"""Running snakepool on one machine: the process launcher (``snakepool up``) and the demos.

- :mod:`~snakepool.tasks.local.launcher` — :class:`Launcher`: nodes, Flower and a Redis
  as child processes, stopped in order;
- :mod:`~snakepool.tasks.local.pool_demo` and :mod:`~snakepool.tasks.local.system_demo` —
  the two halves of ``snakepool demo``.

Names here are loaded on first use (the system demo pulls in Celery).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snakepool.tasks.local.launcher import Launcher, child_env, free_port
    from snakepool.tasks.local.pool_demo import run_pool_demo
    from snakepool.tasks.local.system_demo import run_system_demo

__all__ = ["Launcher", "child_env", "free_port", "run_pool_demo", "run_system_demo"]


def __getattr__(name: str) -> Any:
    if name in ("Launcher", "child_env", "free_port"):
        from snakepool.tasks.local import launcher

        return getattr(launcher, name)
    if name == "run_pool_demo":
        from snakepool.tasks.local.pool_demo import run_pool_demo

        return run_pool_demo
    if name == "run_system_demo":
        from snakepool.tasks.local.system_demo import run_system_demo

        return run_system_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
