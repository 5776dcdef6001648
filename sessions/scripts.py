"""The Lua scripts of ``sessions/lua/``, read once from the installed package."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["lua"]


@cache
def lua(name: str) -> str:
    """The source of ``sessions/lua/<name>.lua``.

    Read through the ``snakepool.sessions`` package, so it works wherever snakepool is
    installed (not only from a checkout's top-level ``sessions/`` folder).

    Raises:
        FileNotFoundError: no such script.
    """
    return resources.files("snakepool.sessions").joinpath(f"lua/{name}.lua").read_text()
