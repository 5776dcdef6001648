"""Reports where the interpreter runs from: which Python, and where snakepool came from."""

import importlib.util
import sys
from typing import Any

import snakepool.errors
from snakepool.pool.interpreter import command


@command(read_only=True)
def whereami(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "errors_file": snakepool.errors.__file__,
        "has_celery": importlib.util.find_spec("celery") is not None,
    }
