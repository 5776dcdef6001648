"""Settings: one validated model from ``SNAKEPOOL_*`` env vars or a TOML file."""

from snakepool.config.settings import PoolSettings, Settings, load_pool_settings, load_settings

__all__ = ["PoolSettings", "Settings", "load_pool_settings", "load_settings"]
