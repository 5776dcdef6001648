"""An adapter that tells whether its template packed an interpreter's start, and whose
``setup`` leaves a line per run in the file ``REHEARSED_ADAPTER_SETUP_LOG`` names."""

from __future__ import annotations

import os
from typing import Any

from snakepool.pool.interpreter import Adapter, code_packing, command, server


class Rehearsed(Adapter):
    def setup(self) -> None:
        with open(os.environ["REHEARSED_ADAPTER_SETUP_LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")

    @command(read_only=True)
    def packed(self, args: dict[str, Any]) -> dict[str, bool]:
        """Whether the request loop and the start run packed copies of their code."""
        return {
            name: id(function.__code__) in code_packing._packed
            for name, function in (("serve", server.serve), ("prepare_child", server.prepare_child))
        }
