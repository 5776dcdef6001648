"""What an interpreter under *another* Python executable needs on its ``sys.path``.

The interpreter side is :mod:`snakepool.pool.interpreter` plus the dependency-free
:mod:`snakepool.errors`. Our own Python finds them where we do (``sys.path``, an
editable install's finder). Another Python (setting ``PYTHON``, e.g. a second virtual
environment) must not see our site-packages — its compiled packages would not load — so
it gets a small directory holding only those two, as symbolic links under empty
``snakepool`` and ``snakepool.pool`` packages. Created once per process, removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

import snakepool.errors
import snakepool.pool.interpreter

__all__ = ["interpreter_import_root"]

_lock = threading.Lock()
_root: str | None = None


def interpreter_import_root() -> str:
    """A directory that, on ``PYTHONPATH``, makes ``snakepool.pool.interpreter`` importable.

    Returns:
        The directory's absolute path (shared by every pool of this process).
    """
    global _root
    with _lock:
        if _root is None or not Path(_root).is_dir():
            root = Path(tempfile.mkdtemp(prefix="snakepool-interpreter-"))
            package = root / "snakepool"
            (package / "pool").mkdir(parents=True)
            (package / "__init__.py").write_text('"""Interpreter-side subset of snakepool."""\n')
            (package / "pool" / "__init__.py").write_text("")
            (package / "errors.py").symlink_to(Path(snakepool.errors.__file__).resolve())
            (package / "pool" / "interpreter").symlink_to(
                Path(snakepool.pool.interpreter.__file__).resolve().parent
            )
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            _root = str(root)
        return _root
