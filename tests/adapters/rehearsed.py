"""An adapter that tells whether its template packed an interpreter's start, and whose
``setup`` and own ``ping`` leave a line per run in the file
``REHEARSED_ADAPTER_SETUP_LOG`` names."""

from __future__ import annotations

import os
from typing import Any

from snakepool.pool.interpreter import Adapter, code_packing, command, server


def _log(what: str) -> None:
    with open(os.environ["REHEARSED_ADAPTER_SETUP_LOG"], "a") as log:
        log.write(f"{what} {os.getpid()}\n")


class Rehearsed(Adapter):
    def setup(self) -> None:
        _log("setup")

    @command(read_only=True)
    def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        """The adapter's own ping (it replaces the built-in one): acts on the world."""
        _log("ping")
        return {"pong": True, "pid": os.getpid(), "own": True}

    @command(read_only=True)
    def packed(self, args: dict[str, Any]) -> dict[str, bool]:
        """Whether the request loop and the start run packed copies of their code."""
        return {
            name: id(function.__code__) in code_packing._packed
            for name, function in (("serve", server.serve), ("prepare_child", server.prepare_child))
        }
