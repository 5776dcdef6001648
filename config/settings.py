"""snakepool's settings: one validated model, from ``SNAKEPOOL_*`` env vars or a TOML file.

Precedence: keyword arguments > environment > TOML file (``SNAKEPOOL_CONFIG``, else
``./snakepool.toml`` when present) > the defaults below. Keys in the TOML file are the
setting names in lower case (``pool_size = 8``). An invalid value fails at start with
a :class:`~snakepool.errors.ConfigError` naming the setting and what it accepts.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["PoolSettings", "Settings", "load_pool_settings", "load_settings"]

ENV_PREFIX = "SNAKEPOOL_"
#: Env var naming a TOML settings file.
CONFIG_FILE_ENV = "SNAKEPOOL_CONFIG"
#: Read when present and ``SNAKEPOOL_CONFIG`` is unset.
DEFAULT_CONFIG_FILE = "snakepool.toml"

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _default_pool_size() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class PoolSettings(BaseModel):
    """Everything the interpreter pool needs; every field is also a ``Pool`` keyword."""

    #: Interpreters per pool (per worker node).
    pool_size: int = Field(default_factory=_default_pool_size, ge=1, le=256)
    #: Dotted path of the adapter module (or ``module.AdapterClass``).
    adapter: str = "snakepool.pool.interpreter.builtin"
    #: Python executable the interpreters run on.
    python: str = Field(default_factory=lambda: sys.executable)
    #: ``forkserver``: fork each interpreter from a preloaded template (fast);
    #: ``spawn``: a fresh ``python`` per interpreter (for fork-unsafe adapters).
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    #: Seconds for the template and each interpreter to become ready.
    startup_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: Seconds a command may run before its interpreter is killed and replaced.
    request_timeout: float = Field(default=30.0, gt=0, le=86400)
    #: Requests that may wait for a free interpreter; more get ``QueueFull`` at once.
    max_queue: int = Field(default=1000, ge=0, le=1_000_000)
    #: Seconds a request waits for a free interpreter before ``QueueTimeout``.
    queue_timeout: float = Field(default=10.0, ge=0, le=3600)
    #: Recycle an interpreter after this many requests (0: never).
    max_requests_per_worker: int = Field(default=0, ge=0)
    #: Recycle an interpreter whose RSS exceeds this many MiB (0: never).
    max_worker_rss_mb: int = Field(default=0, ge=0)
    #: Recycle an interpreter older than this many seconds (0: never).
    max_worker_age: float = Field(default=0.0, ge=0)
    #: Seconds between health pings of idle interpreters.
    health_check_interval: float = Field(default=30.0, gt=0, le=86400)
    #: Largest request or result, in bytes.
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    #: Unplanned restarts allowed within ``restart_period`` before backing off.
    restart_intensity: int = Field(default=20, ge=1, le=10_000)
    #: The window, in seconds, for ``restart_intensity``.
    restart_period: float = Field(default=10.0, gt=0, le=86400)
    #: Where the process registry lives (default: per-user runtime dir).
    registry_dir: str | None = None
    #: Allow the test-only chaos adapter (``snakepool.pool.interpreter.chaos``).
    enable_chaos: bool = False
    #: Allow commands that change an interpreter's configuration (``configure_lm``:
    #: which LM it calls, with the server's credentials). Off: they are UnknownCommand.
    allow_admin_commands: bool = False
    #: Language model for DSPy programs: ``dummy`` (DSPy's DummyLM, offline and
    #: deterministic) or a model name for ``dspy.LM`` such as ``openai/gpt-4o-mini``
    #: (credentials from the provider's usual env vars).
    lm: str = Field(default="dummy", min_length=1)
    #: JSON file of dummy answers, ``{"substring of an input": {"field": "value"}}``.
    lm_answers: str | None = None

    @field_validator("adapter")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not _DOTTED.match(value):
            raise ValueError(
                "must be a dotted module path such as 'snakepool.pool.interpreter.builtin'"
            )
        if value.startswith("pool.interpreter."):  # the name before the one namespace
            return f"snakepool.{value}"
        return value

    @field_validator("lm_answers")
    @classmethod
    def _answers_file(cls, value: str | None) -> str | None:
        if value and not Path(value).is_file():
            raise ValueError(f"no such file {value!r}")
        return str(Path(value).resolve()) if value else None

    @field_validator("python")
    @classmethod
    def _executable(cls, value: str) -> str:
        found = shutil.which(value)
        if found is None:
            raise ValueError(f"no executable Python at {value!r}")
        return value if os.path.isabs(value) else found


class Settings(PoolSettings, BaseSettings):
    """All settings: the pool's plus Redis, broker and LM (env prefix ``SNAKEPOOL_``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, case_sensitive=False
    )

    #: The SessionStore and flags (and the broker unless ``BROKER_URL`` is set).
    redis_url: str = "redis://localhost:6379/0"
    #: Celery broker; defaults to ``REDIS_URL``.
    broker_url: str | None = None
    #: Prefix of every Redis key snakepool writes.
    key_prefix: str = Field(default="snakepool:", min_length=1, max_length=64)
    #: Seconds a session lives after its last access (unless created with its own TTL).
    session_ttl: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    #: Seconds a client waits for a result by default (``Client.execute``).
    result_timeout: float = Field(default=60.0, gt=0, le=86400)
    #: Seconds before Redis redelivers a message whose worker died mid-task (acks are
    #: late): longer than any request may run, or a slow request would run twice.
    visibility_timeout: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    #: A lane's circuit breaker opens at this server-error rate ...
    breaker_error_rate: float = Field(default=0.5, gt=0, le=1)
    #: ... over this many seconds of its metrics ...
    breaker_window: int = Field(default=10, ge=1, le=3600)
    #: ... once it has served at least this many requests in them ...
    breaker_min_requests: int = Field(default=20, ge=1)
    #: ... and stays open this many seconds (its traffic goes to the other lane).
    breaker_cooldown: float = Field(default=15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _broker_defaults_to_redis(self) -> Settings:
        if not self.broker_url:
            self.broker_url = self.redis_url
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords, then environment, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_ENV) or (
            DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None
        )
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _describe(exc: ValidationError, *, env: bool) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = f"{ENV_PREFIX}{field.upper()}" if env else field
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        problems.append(f"{name}: {error['msg']}{shown}")
    return "invalid settings: " + "; ".join(problems)


def _config_error(exc: ValidationError, *, env: bool) -> Exception:
    from snakepool.errors import ConfigError  # late: config must not depend on pool at import

    first = exc.errors()[0]["loc"]
    setting = str(first[0]).upper() if first else None
    return ConfigError(_describe(exc, env=env), setting=setting)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate every setting.

    Raises:
        ConfigError: naming each invalid setting (as its env var) and what it accepts.
    """
    if (path := os.environ.get(CONFIG_FILE_ENV)) and not Path(path).is_file():
        from snakepool.errors import ConfigError

        raise ConfigError(f"{CONFIG_FILE_ENV}: no such file {path!r}", setting="CONFIG")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc, env=True) from None


def load_pool_settings(**values: Any) -> PoolSettings:
    """Validate pool keywords (defaults for the rest; the environment is not read).

    Raises:
        ConfigError: naming each invalid keyword and what it accepts.
    """
    unknown = set(values) - set(PoolSettings.model_fields)
    if unknown:
        from snakepool.errors import ConfigError

        raise ConfigError(
            f"unknown pool setting(s): {', '.join(sorted(unknown))}",
            setting=sorted(unknown)[0].upper(),
        )
    try:
        return PoolSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise _config_error(exc, env=False) from None
