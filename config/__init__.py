"""Settings, identifiers, Redis key names, limits and rollout flags.

``load_settings()`` reads and validates every setting (``SNAKEPOOL_*`` env vars, a TOML
file, keywords); :mod:`~snakepool.config.ids` says what an id may be;
:mod:`~snakepool.config.keys` builds every Redis key and :mod:`~snakepool.config.limits`
bounds them.
"""

from snakepool.config.settings import PoolSettings, Settings, load_pool_settings, load_settings

__all__ = ["PoolSettings", "Settings", "load_pool_settings", "load_settings"]
