"""The Lua scripts of ``tasks/worker/recovery/lua/``, read once from the installed package."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["lua"]


@cache
def lua(name: str) -> str:
    """The source of ``tasks/worker/recovery/lua/<name>.lua``.

    Raises:
        FileNotFoundError: no such script.
    """
    package = resources.files("snakepool.tasks.worker.recovery")
    return package.joinpath(f"lua/{name}.lua").read_text()
