"""What an interpreter under *another* Python executable needs on its ``sys.path``.

The interpreter side is :mod:`snakepool.pool.interpreter` plus the dependency-free
:mod:`snakepool.errors`. Our own Python finds them where we do (``sys.path``, an
editable install's finder). Another Python (setting ``PYTHON``, e.g. a second virtual
environment) must not see our site-packages — its compiled packages would not load — so
it gets a small directory holding only those two, as symbolic links under empty
``snakepool`` and ``snakepool.pool`` packages. Created once per process, removed at exit.

A process killed outright (SIGKILL, the OOM killer) never runs its exit handlers, so its
directory stays behind. Each directory therefore names its owner (pid and create time,
in a file ``owner``), and a process creating its own first removes every such directory
whose owner is gone — checked against the create time, so a reused pid never keeps a
stale directory nor loses a live one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import psutil

import snakepool.errors
import snakepool.pool.interpreter

__all__ = ["ROOT_PREFIX", "interpreter_import_root", "sweep_stale_roots"]

#: What every such directory's name starts with, in the temporary directory.
ROOT_PREFIX = "snakepool-interpreter-"
#: The file in each that names its owner: ``"<pid> <create time>"``.
_OWNER_FILE = "owner"
#: Create times are floats rounded by the kernel's clock tick; allow for that.
_CREATE_TIME_TOLERANCE = 0.05

_lock = threading.Lock()
_root: str | None = None


def _owner_is_gone(root: Path) -> bool:
    """Whether ``root``'s owner no longer runs (False when that cannot be told)."""
    try:
        pid_text, created_text = (root / _OWNER_FILE).read_text().split()
        pid, created = int(pid_text), float(created_text)
    except (OSError, ValueError):
        return False  # not written yet (being created), or not ours to judge
    try:
        running: float = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    return abs(running - created) > _CREATE_TIME_TOLERANCE  # the pid is another process's


def sweep_stale_roots(base: str | None = None) -> list[Path]:
    """Remove the import roots whose owner is gone (it was killed before its exit hook).

    Only directories named ``snakepool-interpreter-*``, owned by this user, holding an
    ``owner`` file whose process is gone, are removed; their symbolic links are removed,
    never followed.

    Args:
        base: Where to look (default: the temporary directory ``mkdtemp`` uses).

    Returns:
        The directories removed.
    """
    removed = []
    for root in Path(base or tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        with contextlib.suppress(OSError):
            if root.is_symlink() or not root.is_dir() or root.stat().st_uid != os.getuid():
                continue
            if _owner_is_gone(root):
                shutil.rmtree(root)
                removed.append(root)
    return removed


def interpreter_import_root() -> str:
    """A directory that, on ``PYTHONPATH``, makes ``snakepool.pool.interpreter`` importable.

    The first call in a process also sweeps the directories dead processes left behind
    (:func:`sweep_stale_roots`).

    Returns:
        The directory's absolute path (shared by every pool of this process).
    """
    global _root
    with _lock:
        if _root is None or not Path(_root).is_dir():
            root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
            me = psutil.Process()
            (root / _OWNER_FILE).write_text(f"{me.pid} {me.create_time()!r}\n")
            sweep_stale_roots(str(root.parent))
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
