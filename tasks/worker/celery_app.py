"""The Celery app for Celery's own command line (``celery -A``) and Flower.

::

    export CELERY_BROKER_URL=redis://:password@redis:6379/0   # in the environment,
    celery -A snakepool.tasks.worker.celery_app inspect ping  # never on the command line
    celery -A snakepool.tasks.worker.celery_app inspect stats # the pools' figures too

``celery -A MODULE`` looks for an attribute ``app`` (then ``celery``) of the module.
Here it is built on first use, from the settings (``SNAKEPOOL_*``, the TOML file), by
:func:`~snakepool.tasks.worker.app.create_app` — the same configuration the nodes
run with (JSON only, the lanes' queues and routes) — never at import, so importing this
module reads no settings. Celery takes ``CELERY_BROKER_URL`` from the environment ahead
of any configuration, which keeps a broker password off the command line (``ps`` shows
command lines to every user of the machine); ``celery -b URL`` would put it there.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

__all__ = ["get_app"]

_lock = threading.Lock()
_app: Celery | None = None


def get_app() -> Celery:
    """The app, built from the settings the first time (then the same one).

    Raises:
        ConfigError: the settings are invalid (naming the setting).
    """
    global _app
    with _lock:
        if _app is None:
            from snakepool.config import load_settings
            from snakepool.tasks.worker.app import create_app

            _app = create_app(load_settings())
        return _app


def __getattr__(name: str) -> Any:
    """``app`` and ``celery`` (the names ``celery -A`` looks for): :func:`get_app`."""
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
