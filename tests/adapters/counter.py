"""A class-based adapter: state lives in the instance, one per interpreter."""

import os
from typing import Any

from snakepool.pool.interpreter import Adapter, command


class Counter(Adapter):
    def setup(self) -> None:
        self.count = 0
        self.setup_pid = os.getpid()

    @command()
    def incr(self, args: dict[str, Any]) -> dict[str, int]:
        self.count += int(args.get("by", 1))
        return {"count": self.count, "pid": os.getpid(), "setup_pid": self.setup_pid}
