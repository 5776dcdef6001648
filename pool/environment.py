"""The environment of a pool's template and interpreters (see :meth:`Pool.child_env
<snakepool.pool.pool.Pool.child_env>`).

Whatever the pool's own process can import, its interpreters can too; the settings an
adapter reads (it cannot import ours) are set from the pool's settings, not inherited;
and what interpreters have no use for and must not leak is left out: the connection
settings of the node's Redis and broker, whose URLs may hold a password. An interpreter
talks to nobody but its pool; code it runs (an adapter, a tool an LM program calls)
would otherwise read the password from its own environment.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from snakepool.config.settings import ENV_PREFIX, PoolSettings
from snakepool.pool.interpreter_path import interpreter_import_root

__all__ = ["WITHHELD", "interpreter_env"]

#: Environment variables never passed on to interpreters (compared case-insensitively,
#: as the settings read them).
WITHHELD = frozenset(f"{ENV_PREFIX}{name}".upper() for name in ("REDIS_URL", "BROKER_URL"))


def interpreter_env(settings: PoolSettings, base: Mapping[str, str]) -> dict[str, str]:
    """The environment for interpreters of a pool with ``settings``, from ``base``.

    With the same Python as ours, ``PYTHONPATH`` is our ``sys.path``, so whatever this
    process can import (a test's adapter, a script's directory) the interpreters can
    too. With another Python, only the interpreter side of snakepool
    (:func:`~snakepool.pool.interpreter_path.interpreter_import_root`) and the working
    directory are added: another version's site-packages would not load.
    """
    env = {name: value for name, value in base.items() if name.upper() not in WITHHELD}
    if _same_environment(settings.python, sys.executable):
        paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    else:
        paths = [interpreter_import_root(), os.getcwd()]
    if given := env.get("PYTHONPATH"):  # the caller's own entries come first
        paths = [*given.split(os.pathsep), *paths]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if settings.enable_chaos:
        env["SNAKEPOOL_ENABLE_CHAOS"] = "1"
    # The setting decides, not whatever the parent's environment happens to hold.
    env["SNAKEPOOL_ALLOW_ADMIN_COMMANDS"] = "1" if settings.allow_admin_commands else "0"
    # Adapters read their own settings from the environment: they cannot import ours.
    env["SNAKEPOOL_LM"] = settings.lm
    if settings.lm_answers:
        env["SNAKEPOOL_LM_ANSWERS"] = settings.lm_answers
    else:
        env.pop("SNAKEPOOL_LM_ANSWERS", None)
    return env


def _same_environment(python: str, ours: str) -> bool:
    """Whether ``python`` runs in our environment: an executable of the same ``bin``.

    Not ``realpath``: every virtual environment's ``python`` links to the same base
    binary, yet each has its own site-packages.
    """
    found = shutil.which(python) or python
    return os.path.dirname(os.path.abspath(found)) == os.path.dirname(os.path.abspath(ours))
