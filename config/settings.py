"""snakepool's settings: one validated model, from ``SNAKEPOOL_*`` env vars or a TOML file.

Precedence: keyword arguments > environment > TOML file (``SNAKEPOOL_CONFIG``, else
``./snakepool.toml`` when present) > the profile preset ``SNAKEPOOL_PROFILE`` names
(``config/presets/<profile>.toml``) > the defaults below. Keys in the TOML file are the
setting names in lower case (``pool_size = 8``).

Validated at start, in three steps, each failing with a
:class:`~snakepool.errors.ConfigError` naming the setting:

1. names (:mod:`snakepool.config.sources`): an unknown ``SNAKEPOOL_*`` variable, TOML
   key or keyword is an error with the closest valid name; a broken TOML file is an
   error naming the file and the line;
2. each value (the fields below): type, range, URL scheme, dotted path, executable;
3. values together (:mod:`snakepool.config.rules`): e.g. ``VISIBILITY_TIMEOUT`` must
   exceed ``QUEUE_TIMEOUT + REQUEST_TIMEOUT``, ``SHUTDOWN_GRACE`` must be at least
   ``REQUEST_TIMEOUT``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from snakepool.config.ids import DOTTED_PATH, KEY_PREFIX, is_valid
from snakepool.config.limits import MAX_DELIVERY_HISTORY, MAX_SESSION_TTL, METRICS_WINDOW_SECONDS
from snakepool.config.operations import OperationSettings
from snakepool.config.quoting import describe as quoted
from snakepool.config.rules import (
    check_broker_url,
    check_redis_url,
    named_as_written,
    pool_contradictions,
    raise_contradictions,
    system_contradictions,
)
from snakepool.config.secrets import redact_url
from snakepool.config.sources import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    Layers,
    check_names,
    read_layers,
)
from snakepool.config.value_types import check_file_types, check_keyword_types
from snakepool.errors import ConfigError

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "PoolSettings",
    "Settings",
    "load_pool_settings",
    "load_settings",
]

#: Seconds a warm shutdown allows beyond ``REQUEST_TIMEOUT`` when ``SHUTDOWN_GRACE`` is
#: unset (a request that runs to its timeout still has time to reply).
SHUTDOWN_MARGIN = 5.0
#: Settings whose values are URLs (their values may hold passwords: never echoed).
_URL_FIELDS = frozenset({"redis_url", "broker_url"})


def _default_pool_size() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class PoolSettings(BaseModel):
    """Everything the interpreter pool needs; every field is also a ``Pool`` keyword."""

    model_config = ConfigDict(extra="forbid")

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
        if not is_valid(DOTTED_PATH, value):
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

    @model_validator(mode="after")
    def _consistent(self) -> PoolSettings:
        if type(self) is PoolSettings:  # Settings checks the pool's rules with its own
            raise_contradictions(pool_contradictions(self))
        return self


class _FileAndEnvironment(PydanticBaseSettingsSource):
    """The TOML file under the environment, read strictly (:mod:`snakepool.config.sources`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads every field at once."""
        return None, field_name, False

    def __init__(self, settings_cls: type[BaseSettings], keywords: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.keywords = keywords

    def __call__(self) -> dict[str, Any]:
        """Every setting the profile preset, the file and the environment give.

        The keywords come along (the init source has them first anyway) because a
        keyword may name the profile.
        """
        return read_layers(self.keywords, list(self.settings_cls.model_fields)).values


class Settings(PoolSettings, OperationSettings, BaseSettings):
    """All settings: the pool's plus Redis, broker, sessions, timeouts, breaker, and the
    operations' (metrics, profile, controller: :mod:`snakepool.config.operations`).

    Read them with :func:`load_settings`, which reports each error the way the user
    wrote the setting (env name, or TOML file and line).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, case_sensitive=False
    )

    #: The SessionStore, flags and results (``redis://``, ``rediss://``; ``fakeredis://``
    #: for the embedded demo); the broker too unless ``BROKER_URL`` is set.
    redis_url: str = "redis://localhost:6379/0"
    #: Celery broker (``redis://``, ``rediss://``, ``redis+socket://``, ``sentinel://``);
    #: defaults to ``REDIS_URL``.
    broker_url: str | None = None
    #: Prefix of every Redis key snakepool writes (1-64 of ``A-Z a-z 0-9 _ . : -``).
    key_prefix: str = Field(default="snakepool:", min_length=1, max_length=64)
    #: Seconds a session lives after its last access (unless created with its own TTL).
    session_ttl: int = Field(default=3600, ge=1, le=MAX_SESSION_TTL)
    #: Seconds a client waits for a result by default (``Client.execute``); more than
    #: ``REQUEST_TIMEOUT``.
    result_timeout: float = Field(default=60.0, gt=0, le=86400)
    #: Seconds before Redis redelivers a message whose worker died mid-task (acks are
    #: late): more than ``QUEUE_TIMEOUT + REQUEST_TIMEOUT``, or a slow request would run
    #: twice.
    visibility_timeout: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    #: Seconds a warm shutdown lets started requests finish; at least ``REQUEST_TIMEOUT``
    #: (unset: ``REQUEST_TIMEOUT`` + 5 s).
    shutdown_grace: float | None = Field(default=None, gt=0, le=86400)
    #: Deliveries of one request that may end with their node's death before it is
    #: dead-lettered (a poison request: the caller gets ``DeadLettered``).
    poison_threshold: int = Field(default=3, ge=1, le=MAX_DELIVERY_HISTORY)
    #: A lane's circuit breaker opens at this server-error rate ...
    breaker_error_rate: float = Field(default=0.5, gt=0, le=1)
    #: ... over this many seconds of its metrics (at most the 600 s they are kept) ...
    breaker_window: int = Field(default=10, ge=1, le=METRICS_WINDOW_SECONDS)
    #: ... once it has served at least this many requests in them ...
    breaker_min_requests: int = Field(default=20, ge=1)
    #: ... and stays open this many seconds (its traffic goes to the other lane).
    breaker_cooldown: float = Field(default=15.0, gt=0, le=3600)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return check_broker_url(value) if value else value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not is_valid(KEY_PREFIX, value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ . : -")
        return value

    @model_validator(mode="after")
    def _derived_and_consistent(self) -> Settings:
        if not self.broker_url:
            self.broker_url = self.redis_url
        if self.shutdown_grace is None:
            self.shutdown_grace = self.request_timeout + SHUTDOWN_MARGIN
        raise_contradictions(system_contradictions(self))
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
        """Keywords, then environment, then the TOML file, then the profile preset."""
        keywords = dict(getattr(init_settings, "init_kwargs", {}))
        return (init_settings, _FileAndEnvironment(settings_cls, keywords))


def _describe(exc: ValidationError, origins: dict[str, str]) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = origins.get(field, f"{ENV_PREFIX}{field.upper()}")
        given = error.get("input")
        if isinstance(given, dict) or field in _URL_FIELDS:
            shown = f" (got {redact_url(given)!r})" if isinstance(given, str) else ""
        else:  # never repr() of an int of 5000 digits: it raises ValueError
            shown = f" (got {given!r})" if not isinstance(given, int) else f" (got {quoted(given)})"
        problems.append(f"{name}: {error['msg']}{shown}")
    return "invalid settings: " + "; ".join(problems)


def _config_error(exc: ValidationError, origins: dict[str, str]) -> ConfigError:
    first = exc.errors()[0]["loc"]
    setting = str(first[0]).upper() if first else None
    return ConfigError(_describe(exc, origins), setting=setting)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate every setting (keywords > environment > TOML file > defaults).

    Raises:
        ConfigError: naming the setting: an unknown name (with the closest valid one),
            a TOML file that cannot be read or parsed (file and line), an invalid value
            (as its env var, or its file and line), or contradicting values.
    """
    layers: Layers = read_layers(overrides, Settings.model_fields)
    annotations = {name: f.annotation for name, f in Settings.model_fields.items()}
    check_keyword_types(overrides, annotations)
    check_file_types(layers, annotations)
    try:
        with named_as_written(layers.origins):  # contradictions name the TOML key and file
            return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc, layers.origins) from None
    except ConfigError as exc:
        raise _located(exc, layers) from None


def _located(exc: ConfigError, layers: Layers) -> ConfigError:
    """A contradiction found in values from the TOML file also names the file and line."""
    origin = layers.origins.get(str(exc.data.get("setting", "")).lower(), "")
    if origin.startswith(ENV_PREFIX) or not origin:
        return exc
    return ConfigError(f"{origin.rsplit(': ', 1)[0]}: {exc.message}", exc.data)


def load_pool_settings(**values: Any) -> PoolSettings:
    """Validate pool keywords (defaults for the rest; the environment is not read).

    Raises:
        ConfigError: naming each unknown keyword (with the closest valid one), each
            invalid keyword and what it accepts, or contradicting keywords.
    """
    if "size" in values and "pool_size" not in values:  # as ``Pool(size=...)`` spells it
        values["pool_size"] = values.pop("size")
    check_names(values, [*PoolSettings.model_fields, "size"], what="pool setting")
    check_keyword_types(values, {n: f.annotation for n, f in PoolSettings.model_fields.items()})
    try:
        return PoolSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise _config_error(exc, {name: name for name in values}) from None
